-- claim: take up to N ready jobs, giving each a lease (deadline + token) held by one worker.
-- KEYS[1] queue list   KEYS[2] running zset   KEYS[3] delayed zset   KEYS[4] wake list
-- KEYS[5] failed zset  KEYS[6] this worker's claim receipt
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] max jobs  ARGV[3] lease ms  ARGV[4] worker id
-- ARGV[5] request id (unique per claim call of this worker)  ARGV[6] now ms ('' = TIME)
-- ARGV[7] failed TTL ms (for quarantined records)  ARGV[8] queue name
-- Returns { {id, token, name, payload, attempts used, max attempts, runs, ...},
--           {quarantined id, reason, ...}, ms until the next delayed job is due (-1: none),
--           1 if ready jobs remain else 0, the format version of a record too new to read (0: none) }
-- Jobs are popped from the head of the queue list. An inline record becomes the job's hash
-- here (the fields a hash of a running job has); a job id uses the hash it names.
-- Replaying the same request id returns the jobs that request claimed and still holds.
-- A record of a newer format version than FORMAT_VERSION stops the claim: it and the entries
-- after it go back to the head of the list untouched, for a worker that knows that version.
-- An entry tagged '!N:' with N newer is such a record even if the rest does not parse.
-- Flow control (the queue's control hash <base>:meta, queue_ctl.lua): while `paused` is set,
-- nothing is claimed and the reply says so. A start rate (GCRA: `rate` is the emission
-- interval in µs, `burst` the jobs that may start at once; the theoretical arrival time, µs,
-- is kept at <base>:rl) and `maxrun` (jobs running across all workers) cap how many are
-- taken; a capped claim takes fewer or none and says how long to wait. `o:<field>` (set at
-- run time) wins over <field> (declared in code); '0' there lifts that limit.
-- Priority levels: level N != 0 waits in the list <base>:queue:p<N> (inline records or ids,
-- as the queue list), and <base>:levels (zset, member = score = N) names the non-empty ones.
-- Higher levels are taken first, then the queue list (level 0), then the negative levels;
-- FIFO within a level. A job taken from a level list gets its level as field o.
-- Rate groups (per-key limits; keys in the prelude): <base>:ring lists the groups with
-- claimable jobs that no limit holds. The claim rotates it (LMOVE ring ring LEFT RIGHT) and
-- takes one job per group per turn, so a group with 10,000 jobs waiting delays one with 10
-- by one turn, not 10,000 jobs. Jobs without a group (the queue and level lists) count as
-- one more group of the turn, without group limits. Per group, every group alike: a start
-- rate (GCRA: `grate` µs per start, `gburst`; TAT at <base>:grl:<group>, also moved by
-- throttle.lua, which is obeyed even without `grate`) and `gmaxrun` (its jobs running, as
-- counted in <base>:gst: +1 here per lease, -1 by the scripts a run leaves running by). A
-- group a limit holds leaves the ring for <base>:gwait, scored with when to look again
-- (the rate's next start; 100 ms later for gmaxrun, as for maxrun); due ones come back to
-- the ring at the next claim. The claim never looks at a held group: no head-of-line
-- blocking. A job taken from a group's list gets the group as field g. A group list of
-- another type than a list is moved aside to <base>:bad:g:<group> and reported.
-- `hold` (ms, set by throttle.lua for a job without a group) holds the whole queue.
-- A replayed request returns its receipt before any of this: it spends no allowance twice.
-- The reply goes on: 1 if the queue is paused else 0, ms to wait before claiming from it
-- again when a limit held jobs back (-1: none did; with nothing else to take, the earliest
-- time a held group may start again).
local ready_key, running_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local failed_key, receipt_key = KEYS[5], KEYS[6]
local base, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker, request, queue = ARGV[4], ARGV[5], ARGV[8]
local failed_ttl = tonumber(ARGV[7])
local now = now_ms(ARGV[6])
local jobs, bad = {}, {}
local newer = 0
local level = 0  -- the priority level of the list being taken from
local GROUP_RECHECK_MS = 250

local function emit(id, token, fields, runs)
  local n = #jobs
  jobs[n + 1] = id; jobs[n + 2] = token; jobs[n + 3] = fields[1]; jobs[n + 4] = fields[2]
  jobs[n + 5] = fields[3] or '0'; jobs[n + 6] = fields[4]; jobs[n + 7] = runs
end

local function next_due()
  local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  if first[2] then return math.max(0, tonumber(first[2]) - now) end
  return -1
end

local receipt = redis.call('GET', receipt_key)
if receipt then
  local lines = {}
  for line in string.gmatch(receipt, '[^\n]+') do lines[#lines + 1] = line end
  if lines[1] == request then
    for i = 2, #lines do
      local id, token = string.match(lines[i], '^(%S+) (%S+)$')
      if id and hash_field(job_key(base, id), 't') == token then
        local f = redis.call('HMGET', job_key(base, id), 'n', 'p', 'a', 'm', 'k')
        emit(id, token, f, f[5])
      end
    end
    return {jobs, bad, next_due(), 0, 0, 0, -1}
  end
end

local meta_key = base .. ':meta'
local ctl = redis.call('HMGET', meta_key, 'paused', 'rate', 'o:rate', 'burst', 'o:burst', 'maxrun', 'o:maxrun',
  'hold', 'grate', 'o:grate', 'gburst', 'o:gburst', 'gmaxrun', 'o:gmaxrun')
if ctl[1] then return {jobs, bad, -1, 0, 0, 1, -1} end
local function setting(declared, override)
  local value = tonumber(override or declared)
  if value and value > 0 then return value end
  return nil
end
local rate, burst, maxrun = setting(ctl[2], ctl[3]), setting(ctl[4], ctl[5]) or 1, setting(ctl[6], ctl[7])
local grate, gburst, gmaxrun = setting(ctl[9], ctl[10]), setting(ctl[11], ctl[12]) or 1, setting(ctl[13], ctl[14])
local wait = -1
local hold = tonumber(ctl[8] or '')
if hold and hold > now then
  limit, wait = 0, hold - now
end
if maxrun then
  local free = maxrun - redis.call('ZCARD', running_key)
  if free < limit then
    limit = math.max(free, 0)
    wait = 100  -- a slot frees when a job ends anywhere: look again soon
  end
end
local rate_key, tat_us, now_us, rate_capped = base .. ':rl', 0, now * 1000, false
if rate and limit > 0 then
  -- GCRA: a start is allowed while the theoretical arrival time is at most
  -- (burst - 1) emission intervals ahead of now.
  tat_us = math.max(tonumber(redis.call('GET', rate_key) or '') or 0, now_us)
  local allowed = math.floor(((burst - 1) * rate - (tat_us - now_us)) / rate) + 1
  if allowed < limit then
    limit = math.max(allowed, 0)
    rate_capped = true
  end
end

local claimed = {request}

local group = false  -- the rate group whose list is being taken from
local gst_key = base .. ':gst'

local function lease_to(id, key, f)
  local runs = math.floor(tonumber(f[5]) or 0) + 1
  local token = worker .. ':' .. runs
  -- A job id in a level's list has that level as field o already (push_ready, store_job).
  redis.call('HSET', key, 's', 'running', 'k', runs, 't', token, 'w', worker, 'b', now, 'v', FORMAT_VERSION)
  local of = f[9] or group  -- a job's group: its field g, else the list's
  if of then
    if not f[9] then redis.call('HSET', key, 'g', of) end
    count_running(base, of, 1)
  end
  redis.call('ZADD', running_key, now + lease, id)
  emit(id, token, f, runs)
  claimed[#claimed + 1] = id .. ' ' .. token
end

local function set_aside(id, reason, message)
  bad[#bad + 1] = id; bad[#bad + 1] = reason
  quarantine(base, failed_key, id, reason, message, now, failed_ttl)
end

-- A job dispatched to run now: its record is the entry itself. Returns the entry's version
-- when it is too new to read, else nothing.
local function claim_inline(entry)
  local version, from = inline_version(entry)
  if version > FORMAT_VERSION then return version end
  local id, name, max_attempts, created, payload = parse_inline(entry, from)
  if not id then
    -- Kept whole in the quarantine record, under its id if it has a usable one (after the
    -- version tag, if any).
    local aside = string.match(entry, '^([%w_%-]+) ', from)
    if not aside or string.len(aside) > 64 or key_type(job_key(base, aside)) ~= 'none' then
      aside = 'bad-' .. redis.sha1hex(entry)
    end
    set_aside(aside, 'bad_record', 'queued record could not be read')
    redis.call('HSET', job_key(base, aside), 'r', entry)
    return
  end
  local key = job_key(base, id)
  if key_type(key) ~= 'none' then
    -- The job exists already (a copy of a dispatch replayed after its guard): that one
    -- stands, and the copy is dropped, as dispatch left an existing id alone.
    return
  end
  local token = worker .. ':1'
  local fields = {'n', name, 'q', queue, 'p', payload, 'm', max_attempts, 'c', created,
    'd', created, 's', 'running', 'k', 1, 't', token, 'w', worker, 'b', now, 'v', FORMAT_VERSION}
  if level ~= 0 then fields[#fields + 1] = 'o'; fields[#fields + 1] = level end  -- one HSET still
  if group then fields[#fields + 1] = 'g'; fields[#fields + 1] = group end
  redis.call('HSET', key, unpack(fields))
  if group then count_running(base, group, 1) end
  redis.call('ZADD', running_key, now + lease, id)
  emit(id, token, {name, payload, false, max_attempts}, 1)
  claimed[#claimed + 1] = id .. ' ' .. token
end

-- A job id: the job's hash holds its record. Returns the record's version when it is too
-- new to read, else nothing.
local function claim_id(id)
  local key = job_key(base, id)
  local kind = key_type(key)
  local f = false
  if kind == 'hash' then
    f = redis.call('HMGET', key, 'n', 'p', 'a', 'm', 'k', 'v', 'F', 'u', 'g')
    if record_version(f[6]) > FORMAT_VERSION then return record_version(f[6]) end
  end
  if string.len(id) > 64 or not string.find(id, '^[%w_%-]+$') then
    set_aside(id, 'bad_id', 'queued id is not a valid job id')
  elseif kind == 'none' then
    set_aside(id, 'dangling', 'queued id had no job record')
  elseif kind ~= 'hash' then
    set_aside(id, 'wrong_type', 'job key held a ' .. kind)
  elseif not f[1] or not f[2] or not string.find(f[4] or '', '^%d+$')
      or (f[3] and not string.find(f[3], '^%d+$')) then
    set_aside(id, 'missing_field', 'job record lacks a name, payload or attempt count')
  else
    lease_to(id, key, f)
    -- unique_until = "start": the key is free for a new job once this one runs.
    if f[7] and f[8] and string.find(f[7], 's', 1, true) then release_unique(base, id, f[8]) end
  end
end

-- Take one entry: a job (inline record or id) from `list`. Returns true when the claim must
-- stop (a record too new for this claim: it and the rest go back to the head of `list`).
local function take_entries(list, entries)
  for i, entry in ipairs(entries) do
    local too_new
    if string.sub(entry, 1, 1) == INLINE_TAG then too_new = claim_inline(entry) else too_new = claim_id(entry) end
    if too_new then
      newer = too_new
      for j = #entries, i, -1 do redis.call('LPUSH', list, entries[j]) end
      return true
    end
  end
  return false
end

local function move_aside(list)
  -- Not ours to read: moved aside whole (nothing is destroyed), and reported.
  local aside = bad_key(base, string.sub(list, string.len(base) + 2))
  redis.call('RENAME', list, aside)
  redis.call('PEXPIRE', aside, failed_ttl)
  bad[#bad + 1] = list; bad[#bad + 1] = 'wrong_type'
end

-- A command on one of the queue's own keys (`key` first); a key of another type is moved
-- aside and reported, and the command runs on the now missing key.
local function guarded(key, command, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'WRONGTYPE', 1, true) then error(reply) end
    move_aside(key)
    reply = redis.call(command, key, ...)
  end
  return reply
end

-- The jobs without a group, up to `upto` taken in all: the lists to take from, highest
-- level first: positive levels, the queue list, negative ones.
local levels_key = base .. ':levels'
local taken, levels_left = 0, 0
local function take_lists(upto)
  local sources, levels = {}, redis.call('ZRANGE', levels_key, 0, -1, 'WITHSCORES')
  levels_left = 0
  for i = #levels - 1, 1, -2 do
    local n = tonumber(levels[i + 1])
    if not n or n ~= math.floor(n) or n == 0 or n < -10 or n > 10 or levels[i] ~= string.format('%d', n) then
      redis.call('ZREM', levels_key, levels[i])  -- names no level's list (written by hand): dropped
    else
      if n < 0 and not sources.default then sources[#sources + 1] = {ready_key, 0}; sources.default = true end
      sources[#sources + 1] = {ready_key .. ':p' .. levels[i], n}
      levels_left = levels_left + 1
    end
  end
  if not sources.default then sources[#sources + 1] = {ready_key, 0} end
  for _, source in ipairs(sources) do
    local list
    list, level = source[1], source[2]
    local kind = key_type(list)
    local entries = {}
    if kind ~= 'list' and kind ~= 'none' then
      move_aside(list)
    elseif upto > taken then
      entries = redis.call('LPOP', list, upto - taken) or {}
    end
    local stop = take_entries(list, entries)
    taken = taken + #entries
    -- A level's list left empty (or moved aside, or emptied by abort) leaves <base>:levels.
    if level ~= 0 and redis.call('LLEN', list) == 0 then
      redis.call('ZREM', levels_key, level)
      levels_left = levels_left - 1
    end
    if stop or taken >= upto then break end
  end
  level = 0
end

-- One turn of the ring: its first group moves to the tail and gives one job, or, held by a
-- limit, leaves the ring for gwait. Returns false when the ring is empty.
local ring_key, gwait_key = base .. ':ring', base .. ':gwait'
local function take_group()
  group = redis.call('LMOVE', ring_key, ring_key, 'LEFT', 'RIGHT')
  if not group then return false end
  local list = base .. ':g:' .. group
  local again
  if gmaxrun and (tonumber(guarded(gst_key, 'HGET', group)) or 0) >= gmaxrun then again = now + 100 end
  local grl_key = base .. ':grl:' .. group
  local gtat = tonumber(guarded(grl_key, 'GET') or '') or 0
  local slack = grate and (gburst - 1) * grate or 0
  if not again and gtat - now_us > slack then again = math.ceil((gtat - slack) / 1000) end
  if again then
    redis.call('RPOP', ring_key)
    redis.call('ZADD', gwait_key, again, group)
    return true
  end
  local entries = redis.pcall('LPOP', list, 1)
  if type(entries) ~= 'table' or entries.err then
    -- Empty (or not a list: moved aside): the group leaves the turn; it is the tail now.
    redis.call('RPOP', ring_key)
    if entries and entries.err then
      if not string.find(entries.err, 'WRONGTYPE', 1, true) then error(entries) end
      move_aside(list)
    end
    return true
  end
  local stop = take_entries(list, entries)
  taken = taken + #entries
  if not stop and grate then
    gtat = math.max(gtat, now_us) + grate
    redis.call('SET', grl_key, string.format('%d', gtat), 'PX', math.ceil((gtat - now_us) / 1000) + 1)
  end
  -- A group whose list this emptied leaves the ring now: a job dispatched to it later puts
  -- it back once (a group left in the ring while empty would come back twice).
  if not stop and redis.call('LLEN', list) == 0 then redis.call('RPOP', ring_key) end
  return not stop
end

-- A queue without rate groups pays one EXISTS for them per claim call, and nothing more.
local grouped = limit > 0 and redis.call('EXISTS', ring_key, gwait_key) > 0
local ring_len = 0
if grouped then
  -- Groups whose wait is over take their turns again.
  local due_groups = guarded(gwait_key, 'ZRANGEBYSCORE', '-inf', now, 'LIMIT', 0, 1000)
  if #due_groups > 0 then
    redis.call('ZREM', gwait_key, unpack(due_groups))
    redis.call('RPUSH', ring_key, unpack(due_groups))
  end
  ring_len = guarded(ring_key, 'LLEN')
end
if ring_len == 0 then
  take_lists(limit)
else
  -- The jobs without a group are one more group of the turn: their share first.
  take_lists(math.ceil(limit / (ring_len + 1)))
  while newer == 0 and taken < limit and take_group() do end
  group = false
  if newer == 0 and taken < limit then take_lists(limit) end
end

local started = #jobs / 7  -- seven fields per claimed job
if rate and started > 0 then
  tat_us = tat_us + started * rate
  redis.call('SET', rate_key, string.format('%d', tat_us), 'PX', math.ceil((tat_us - now_us) / 1000) + 1)
end
if rate_capped then
  -- When the next start is allowed (none to wait for when the allowance outlasted the jobs).
  local next_ms = math.ceil((tat_us - (burst - 1) * rate - now_us) / 1000)
  if next_ms > 0 then wait = math.max(wait, next_ms) end
end

if #claimed > 1 then
  redis.call('SET', receipt_key, table.concat(claimed, '\n'), 'PX', lease)
end

-- Pass the baton: if work remains, make sure another idle worker wakes for it (after a record
-- too new for this claim, one that can read it; this caller is told there is no more). Not
-- while a limit holds the rest back: the workers come back when it allows.
local more = 0
local groups_left = grouped and redis.call('LLEN', ring_key) > 0
if (levels_left > 0 or groups_left or redis.call('LLEN', ready_key) > 0) and wait < 0 then
  if newer == 0 then more = 1 end
  wake(wake_key)
elseif grouped and wait < 0 and newer == 0 then
  -- Nothing else to take now: come back when the first held group may start again (within
  -- GROUP_RECHECK_MS: a job of a new group, dispatched meanwhile, is not held for long).
  local first = redis.call('ZRANGE', gwait_key, 0, 0, 'WITHSCORES')
  if first[2] then wait = math.min(GROUP_RECHECK_MS, math.max(1, tonumber(first[2]) - now)) end
end
local due = -1
if started < limit and newer == 0 then due = next_due() end
return {jobs, bad, due, more, newer, 0, wait}
