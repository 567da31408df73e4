-- dispatch_flow: store the jobs of one flow (a chain, a batch, or a job with depends_on), all
-- in one queue, each as a hash; a job whose prerequisites have not all succeeded waits
-- (see "Flows" in the prelude for the fields and keys).
-- KEYS[1] wake list (under ARGV[1])
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] queue  ARGV[3] max payload bytes
-- ARGV[4] now ms ('' = Redis TIME)  ARGV[5] deadline ms in Redis time ('' = none): a call that
--   reaches Redis later stores nothing  ARGV[6] failed TTL ms
-- ARGV[7] batch id ('' = no batch)  ARGV[8] batch mode: 'c' on_complete, 's' on_success,
--   '' no callback
-- ARGV[9] E, the number of prerequisites from outside this call, then three per one: id,
--   the ready list the caller found it waiting in as an inline record ('' = none), and that
--   record ('' = none)
-- then nine per job, in an order where prerequisites come first: id, name, max attempts,
--   delay ms, priority level, rate group ('' = none), payload JSON, prerequisites (ids,
--   space-separated: jobs of this call before it, or of the E above), options (letters:
--   'm' batch member, 'c' batch callback, 'r' run even if a prerequisite fails)
-- Returns 1 when stored, 0 when an earlier copy of this call stored it (a replay: the first
-- job's key exists, or the marker <base>:dd:<first job id> the call leaves until its
-- deadline: the first job may have run meanwhile and its record be gone), -1 when the call
-- came after its deadline. Errors, before anything is
-- written: a bad argument, or 'ERR unknown dependency <id>' for an outside prerequisite
-- that is not in this queue (no record, and not found where the caller saw it waiting).
-- Outside prerequisites: a job done (its record, its kept result, or the "done" marker ack
-- leaves for the replay guard) counts as met; one failed or aborted fails the new job at once (unless 'r'),
-- with W naming it, so that retrying it revives the job; a live one (ready, delayed, running,
-- waiting) gets F letter 'd' and the new job in <base>:dep:<id>. An inline record (a plain
-- job not started) becomes a hash in place: LSET swaps its entry for its id, keeping its turn.
local F = flows()
local dependents_key, add_flag, batch_key = F.dependents_key, F.add_flag, F.batch_key
local wake_key = KEYS[1]
local base, queue, max_payload = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl, bid, mode = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local outside = tonumber(ARGV[9])
local first = 10 + 3 * outside
local STRIDE = 9

if not ttl or not outside or (mode ~= '' and mode ~= 'c' and mode ~= 's') then
  return redis.error_reply('ERR invalid flow arguments')
end
if (#ARGV - first + 1) % STRIDE ~= 0 or #ARGV < first then return redis.error_reply('ERR invalid flow arguments') end
local function valid_id(id) return string.len(id) <= 64 and string.find(id, '^[%w_%-]+$') ~= nil end
if bid ~= '' and not valid_id(bid) then return redis.error_reply('ERR invalid batch id') end

-- Validate every job, and know every prerequisite, before anything is written.
local known = {}  -- id -> true for outside prerequisites and the jobs of this call seen so far
for a = 10, first - 1, 3 do
  if not valid_id(ARGV[a]) then return redis.error_reply('ERR invalid job id') end
  known[ARGV[a]] = true
end
local members, callbacks = 0, 0
for a = first, #ARGV, STRIDE do
  local id, name, attempts = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local delay, level, group, payload = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  local options = ARGV[a + 8]
  if not valid_id(id) or known[id] then return redis.error_reply('ERR invalid job id') end
  if not string.find(name, '^[%a_][%w_%.:<>%-]*$') or string.len(name) > 200 then
    return redis.error_reply('ERR invalid job name')
  end
  if not string.find(attempts, '^%d+$') then return redis.error_reply('ERR invalid max attempts') end
  if not delay then return redis.error_reply('ERR invalid delay') end
  if not level or level ~= math.floor(level) or level < -10 or level > 10 then
    return redis.error_reply('ERR invalid priority')
  end
  if group ~= '' and (not valid_group(group) or level ~= 0) then return redis.error_reply('ERR invalid rate group') end
  if string.len(payload) > max_payload then
    return redis.error_reply('ERR payload too large: ' .. string.len(payload) .. ' bytes')
  end
  if not string.find(options, '^[mcr]*$') then return redis.error_reply('ERR invalid flow options') end
  for p in string.gmatch(ARGV[a + 7], '%S+') do
    if not known[p] then return redis.error_reply('ERR prerequisite ' .. p .. ' is not before its dependent') end
  end
  if string.find(options, 'm', 1, true) then
    if ARGV[a + 7] ~= '' then return redis.error_reply('ERR a batch member has no prerequisites') end
    members = members + 1
  end
  if string.find(options, 'c', 1, true) then callbacks = callbacks + 1 end
  known[id] = true
end
if (bid == '') ~= (members == 0) or callbacks > 1 or (callbacks == 1) ~= (mode ~= '') then
  return redis.error_reply('ERR invalid batch')
end

local now = now_ms(ARGV[4])
local deadline = tonumber(ARGV[5])
if deadline and now > deadline then return -1 end
local marker = dispatch_marker(base, ARGV[first])
if redis.call('EXISTS', job_key(base, ARGV[first]), marker) > 0 then return 0 end  -- a replay

-- Where each outside prerequisite stands: done, failed, aborted or live (or inline: found
-- as an inline record, at index `at` of its list).
local state, found = {}, {}
for a = 10, first - 1, 3 do
  local id, list, entry = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local key = job_key(base, id)
  local kind = key_type(key)
  local s
  if kind == 'string' then
    s = string.sub(redis.call('GET', key), 1, 5) == 'done ' and 'done'
  elseif kind == 'hash' then
    local f = redis.call('HMGET', key, 's', 'e', 'v')
    if record_version(f[3]) > FORMAT_VERSION then
      return redis.error_reply('ERR prerequisite ' .. id .. ' has a record of a newer format')
    end
    if f[1] == 'failed' then
      s = string.find(f[2] or '', '"reason":"aborted"', 1, true) and 'aborted' or 'failed'
    elseif f[1] == 'done' then
      s = 'done'
    elseif is_live(key) then
      s = 'live'
    end
  elseif kind == 'none' and redis.call('EXISTS', base .. ':r:' .. id) == 1 then
    s = 'done'  -- its record is gone, its kept result (keep_result) says it succeeded
  elseif kind == 'none' and entry ~= '' and string.sub(list, 1, string.len(base) + 1) == base .. ':' then
    local at = redis.pcall('LPOS', list, entry)
    local version, from = inline_version(entry)
    if type(at) == 'number' and version <= FORMAT_VERSION and parse_inline(entry, from) == id then
      s, found[id] = 'live', {list, at, entry, from}
    end
  end
  if not s then return redis.error_reply('ERR unknown dependency ' .. id) end
  state[id] = s
end

-- An inline record found waiting becomes the hash of a ready job, keeping its place.
for id, where in pairs(found) do
  local list, at, entry, from = where[1], where[2], where[3], where[4]
  local _, name, attempts, created, payload = parse_inline(entry, from)
  local key = job_key(base, id)
  redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', attempts, 'c', created,
    'd', created, 's', 'ready', 'a', 0, 'v', FORMAT_VERSION)
  local level = tonumber(string.match(list, ':queue:p(%-?%d+)$') or '')
  if level then redis.call('HSET', key, 'o', level) end
  local group_prefix = base .. ':g:'
  if string.sub(list, 1, string.len(group_prefix)) == group_prefix then
    redis.call('HSET', key, 'g', string.sub(list, string.len(group_prefix) + 1))
  end
  redis.call('LSET', list, at, id)
end

local woke = false
for a = first, #ARGV, STRIDE do
  local id, name, attempts, delay = ARGV[a], ARGV[a + 1], ARGV[a + 2], math.max(tonumber(ARGV[a + 3]), 0)
  local level, group, payload, options = tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6], ARGV[a + 8]
  local key = job_key(base, id)
  local run_anyway = string.find(options, 'r', 1, true) ~= nil
  local pending, cause, how, ended = 0, false, false, {}
  for p in string.gmatch(ARGV[a + 7], '%S+') do
    local s = state[p]
    if s == 'done' or (run_anyway and (s == 'failed' or s == 'aborted')) then
      ended[#ended + 1] = p  -- counted already (E)
    else
      pending = pending + 1
      local edges = dependents_key(base, p)
      redis.call('SADD', edges, id)
      add_flag(job_key(base, p), hash_field(job_key(base, p), 'F'), 'd')
      if (s == 'failed' or s == 'aborted') and not cause then
        cause, how = p, s
        redis.call('PEXPIRE', edges, ttl)  -- kept as long as the failed record, for a retry
      end
    end
  end
  redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', attempts, 'c', now, 'd', now,
    'v', FORMAT_VERSION)
  if level ~= 0 then redis.call('HSET', key, 'o', level) end
  if group ~= '' then redis.call('HSET', key, 'g', group) end
  if ARGV[a + 7] ~= '' then redis.call('HSET', key, 'P', ARGV[a + 7], 'D', pending) end
  if #ended > 0 then redis.call('HSET', key, 'E', table.concat(ended, ' ')) end
  if run_anyway then redis.call('HSET', key, 'M', 'r') end
  if delay > 0 then redis.call('HSET', key, 'Y', delay) end
  local member, callback = string.find(options, 'm', 1, true), string.find(options, 'c', 1, true)
  if member then redis.call('HSET', key, 'F', 'b', 'B', bid) end
  if callback then redis.call('HSET', key, 'B', bid) end
  if cause then
    redis.call('HSET', key, 's', 'failed', 'f', now, 'W', cause, 'e', error_json(
      how == 'aborted' and 'dependency_aborted' or 'dependency_failed', 'DependencyFailed',
      'its prerequisite ' .. cause .. ' ' .. how))
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', base .. ':failed', now, id)
    state[id] = 'failed'
  elseif pending > 0 or (callback and members > 0) then
    redis.call('HSET', key, 's', 'waiting')
    redis.call('ZADD', base .. ':waiting', now, id)
    state[id] = 'live'
  else
    if delay > 0 then
      redis.call('HSET', key, 's', 'delayed', 'd', now + delay)
      redis.call('ZADD', base .. ':delayed', now + delay, id)
    else
      redis.call('HSET', key, 's', 'ready')
      push_ready(base, id, false)
    end
    woke = true
    state[id] = 'live'
  end
end

if bid ~= '' then
  local callback = ''
  for a = first, #ARGV, STRIDE do
    if string.find(ARGV[a + 8], 'c', 1, true) then callback = ARGV[a] end
  end
  redis.call('HSET', batch_key(base, bid), 'n', members, 'left', members, 'ok', 0, 'ko', 0,
    'cb', callback, 'mode', mode, 'ttl', ttl, 'c', now)
end
-- A replay is refused until the deadline; after it, by the deadline check above.
if deadline then redis.call('SET', marker, 1, 'PX', math.max(deadline - now, 0) + 1) end
if woke then wake(wake_key) end
return 1
