-- Shared helpers, prepended to every script by scripts.py, after the line that sets
-- FORMAT_VERSION (keys.FORMAT_VERSION: the data format these scripts read and write).
-- Time is Redis's own clock (TIME) unless a test passes an explicit "now" in ms.

-- The keys of one job under its queue's base (jobs:{q}); see keys.py.
local function job_key(base, id) return base .. ':j:' .. id end
local function bad_key(base, id) return base .. ':bad:' .. id end
local function dispatch_marker(base, id) return base .. ':dd:' .. id end

local function now_ms(override)
  local forced = tonumber(override)
  if forced and forced >= 0 then return forced end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One token in the wake list is enough to wake one idle worker; claim passes it on.
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, '1') end
end

-- The type of a key, tolerant of anything a user may have written there.
local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- A field of a hash, or false when the key is missing or not a hash.
local function hash_field(key, field)
  local value = redis.pcall('HGET', key, field)
  if type(value) == 'table' then
    -- Only a key of the wrong type means "no such field"; any other error (an ACL that
    -- lacks HGET, say) must not pass for a lease that is no longer held.
    if value.err and not string.find(value.err, 'WRONGTYPE', 1, true) then error(value) end
    return false
  end
  return value
end

-- True when the run holding `token` already did `step` (ack, retry, fail, release) to this
-- job: a replayed call (redis-py resends a call whose reply was lost) reports success again.
-- The job hash keeps the last step as field x = "<step> <token>"; an acked and deleted job
-- leaves the string "done <token>" at its key.
local function settled_by(job_key, step, token)
  local kind = key_type(job_key)
  if kind == 'string' then return step == 'ack' and redis.call('GET', job_key) == 'done ' .. token end
  if kind == 'hash' then return redis.call('HGET', job_key, 'x') == step .. ' ' .. token end
  return false
end

-- Rate groups (per-key limits; see claim.lua). A job of group G waits in the list
-- <base>:g:G; <base>:ring lists the groups with claimable jobs that no limit holds (in turn
-- order); <base>:gwait (zset) holds the groups a limit holds -> when to look again (ms);
-- <base>:gst (hash) counts each group's running jobs (G -> n). A group key is 1-200
-- characters of letters, digits and '_.:@+-' (checked by dispatch; see groups.py).
local function group_list(base, group) return base .. ':g:' .. group end

local function valid_group(group)
  return string.len(group) <= 200 and string.find(group, '^[%w_%.:@%+%-]+$') ~= nil
end

-- A group list's key when it is a list or free; a key of another type is renamed aside to
-- <base>:bad:g:<group> first (nothing is destroyed; claim.lua reports the ones it finds).
local function usable_group_list(base, group)
  local list = group_list(base, group)
  local kind = key_type(list)
  if kind ~= 'list' and kind ~= 'none' then redis.call('RENAME', list, bad_key(base, 'g:' .. group)) end
  return list
end

-- After `pushed` entries made a group's list `len` long: a list that was empty joins the
-- ring, unless a limit holds the group (it is in gwait; claim.lua brings it back). A group
-- whose list an abort emptied may sit in the ring twice: claim.lua drops the extra turn.
local function group_ready(base, group, len, pushed)
  if len == pushed and not redis.call('ZSCORE', base .. ':gwait', group) then
    redis.call('RPUSH', base .. ':ring', group)
  end
end

-- Add `by` to the running count of group `group` (false: none), the field <group> of the
-- hash <base>:gst. A gst of another type is moved aside to <base>:bad:gst, a field that is
-- not a count is dropped: the counts start again rather than the script failing halfway.
local function count_running(base, group, by)
  if not group then return end
  local gst = base .. ':gst'
  local n = redis.pcall('HINCRBY', gst, group, by)
  if type(n) == 'table' then
    if string.find(n.err or '', 'WRONGTYPE', 1, true) then
      redis.call('RENAME', gst, bad_key(base, 'gst'))
    else
      redis.call('HDEL', gst, group)
    end
    n = redis.call('HINCRBY', gst, group, by)
  end
  if n <= 0 then redis.call('HDEL', gst, group) end
end

-- A run of group `group` (false: none) stopped running (it ended, was handed back, retried,
-- throttled or reaped): one fewer running. Called only by the fenced branch of a script, so
-- once per run; claim.lua counts the run when it leases it.
local function group_left(base, group)
  count_running(base, group, -1)
end

-- Put job `id` (its hash exists) back among the ready jobs, at the head of its line (a job
-- handed back) or at the tail: the queue list, the list of its priority level (field o),
-- which is then named in <base>:levels, or its rate group's list (field g), whose group
-- then joins the ring (see claim.lua).
local function push_ready(base, id, at_head)
  local f = redis.call('HMGET', job_key(base, id), 'o', 'g')
  if f[2] then
    local len = redis.call(at_head and 'LPUSH' or 'RPUSH', usable_group_list(base, f[2]), id)
    group_ready(base, f[2], len, 1)
    return
  end
  local list = base .. ':queue'
  local level = tonumber(f[1] or '')
  if level and level ~= 0 then
    list = list .. ':p' .. level
    redis.call('ZADD', base .. ':levels', level, level)
  end
  redis.call(at_head and 'LPUSH' or 'RPUSH', list, id)
end

-- Unique jobs. A unique job's hash has F (flags, below) and u (its lock's suffix,
-- "<job name>:<key>"); its lock is the string <base>:u:<suffix> whose value is the id of the
-- job that holds it. The lock has no TTL: it is deleted by the script that ends its job.
-- Flags in F: 'u' holds a unique lock until the job's final state; 's' holds it only until
-- the job starts (claim.lua lets it go).
local function unique_lock(base, suffix) return base .. ':u:' .. suffix end
local function successor_key(base, suffix) return base .. ':un:' .. suffix end

-- Let a unique lock go, if `id` holds it (a lock taken over by another job stays).
local function release_unique(base, id, suffix)
  local lock = unique_lock(base, suffix)
  if redis.call('GET', lock) == id then redis.call('DEL', lock) end
end

-- Whether the job at `key` is live (ready, delayed, running, or waiting for others): its
-- state field says so.
local function is_live(key)
  local state = hash_field(key, 's')
  return state == 'ready' or state == 'delayed' or state == 'running' or state == 'waiting'
end

-- Store one job with options as a hash and make it ready (due <= now) or delayed. `flags`
-- and `suffix` are false for a job without a unique key, `group` for one without a group. Returns nothing; the caller wakes.
local function store_job(base, queue, id, name, max_attempts, payload, now, due, flags, suffix, level, group)
  local key = job_key(base, id)
  redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts, 'c', now,
    'd', due, 's', due > now and 'delayed' or 'ready', 'v', FORMAT_VERSION)
  if level and level ~= 0 then redis.call('HSET', key, 'o', level) end
  if group then redis.call('HSET', key, 'g', group) end
  if flags then
    redis.call('HSET', key, 'F', flags, 'u', suffix)
    redis.call('SET', unique_lock(base, suffix), id)
  end
  if due > now then
    redis.call('ZADD', base .. ':delayed', due, id)
  else
    push_ready(base, id, false)
  end
end

local function error_json(reason, kind, message)
  return cjson.encode({reason = reason, type = kind, message = message})
end

-- The queue list holds job ids and inline records (see keys.py):
-- '!' version ':' id ' ' name ' ' max attempts ' ' created ms ' ' payload JSON (raw, to the end).
-- 0.1 wrote them without the "version:" part; they read as version 1, laid out the same.
local INLINE_TAG = '!'

local function inline_record(id, name, max_attempts, created, payload)
  return INLINE_TAG .. FORMAT_VERSION .. ':' .. id .. ' ' .. name .. ' ' .. max_attempts .. ' '
    .. created .. ' ' .. payload
end

-- The format version of an inline record, and where its fields begin.
-- Any '!<digits>:' tag counts, however the rest reads (the rule in keys.py): a record tagged
-- with a newer version is too new, never malformed. Versions past 999 read as 999.
local function inline_version(entry)
  local version = string.match(entry, '^!(%d+):')
  if version then return math.min(tonumber(version), 999), string.len(version) + 3 end
  return 1, 2
end

-- The format version of a job hash (HGET 'v' of it, its leading digits); 0.1 wrote none:
-- version 1.
local function record_version(v)
  local digits = v and string.match(v, '^%d+')
  if digits then return math.min(tonumber(digits), 999) end
  return 1
end

-- id, name, max attempts, created ms, payload of an inline record of a version these
-- scripts know; nil when it is malformed.
local function parse_inline(entry, from)
  local id, name, max_attempts, created, payload =
    string.match(entry, '^([%w_%-]+) ([%a_][%w_%.:<>%-]*) (%d+) (%d+) (.*)$', from)
  if not id or string.len(id) > 64 or string.len(name) > 200 or payload == '' then return nil end
  return id, name, max_attempts, created, payload
end

-- Results (keep_result): a job that keeps its result, once done, leaves it at <base>:r:<id>
-- for keep ms. A job that keeps its result and ends (done, failed, aborted) adds one entry
-- to <base>:n:<id>, a stream a waiter blocks on with XREAD (non-destructive: every waiter
-- wakes); it expires after ENDED_NOTICE_MS, the waiter reads the record itself.
local ENDED_NOTICE_MS = 60000

local function notify_ended(base, id, state)
  local stream = base .. ':n:' .. id
  redis.call('XADD', stream, 'MAXLEN', '1', '*', 's', state)
  redis.call('PEXPIRE', stream, ENDED_NOTICE_MS)
end

local function keep_result(base, id, keep, result)
  redis.call('SET', base .. ':r:' .. id, result, 'PX', keep)
  notify_ended(base, id, 'done')
end

-- Flows: chains, batches and dependencies (dispatch_flow.lua stores them). Every job of a
-- flow is a hash in one queue, so each step below is atomic with the end that causes it.
-- A job that waits for others has s = 'waiting', is in <base>:waiting (zset, id -> created
-- ms) and has the fields P (its prerequisites' ids, space-separated), D (how many of them
-- have not succeeded yet), E (the prerequisites whose end it has counted, space-separated:
-- each is counted once, however often it is retried), M ('r': run even if one fails; else
-- fail with it), Y (ms to wait once released). D is the number of P not in E. A
-- prerequisite has F letter 'd', and <base>:dep:<id> (set) names the jobs that wait for it.
-- A batch <bid> is the hash <base>:batch:<bid> (n members, left not ended, ok / ko ended
-- done / failed, cb its callback's id or '', mode 'c' on_complete or 's' on_success, ttl
-- the failed TTL it was made with) with the lists <base>:batch:<bid>:ok / :ko of the first
-- BATCH_IDS_KEPT ids
-- of each; a member has F letter 'b' and B = <bid>, the callback B = <bid> and s 'waiting'.
-- The helpers are built on first use (flows()): a Lua script makes every closure it defines
-- on each call, and the scripts of plain jobs should not pay for these.
local built_flows = false
local function flows()
  if built_flows then return built_flows end
  local F = {}
  F.BATCH_IDS_KEPT = 1000

  function F.dependents_key(base, id) return base .. ':dep:' .. id end
  function F.batch_key(base, bid) return base .. ':batch:' .. bid end

  -- Add flag letter `letter` to the F of the job hash at `key` (its F is `flags`, or false).
  function F.add_flag(key, flags, letter)
    flags = flags or ''
    if not string.find(flags, letter, 1, true) then redis.call('HSET', key, 'F', flags .. letter) end
  end

  -- Waiting job `id` may start: ready now (at the tail of its line), or delayed by its Y.
  function F.release_waiting(base, id, now)
    local key = job_key(base, id)
    redis.call('ZREM', base .. ':waiting', id)
    local delay = tonumber(hash_field(key, 'Y') or '') or 0
    if delay > 0 then
      redis.call('HSET', key, 's', 'delayed', 'd', now + delay)
      redis.call('ZADD', base .. ':delayed', now + delay, id)
    else
      redis.call('HSET', key, 's', 'ready', 'd', now)
      push_ready(base, id, false)
    end
    wake(base .. ':wake')
  end

  -- End waiting job `id` in the failed set, because its prerequisite `cause` ended `how`
  -- ('failed' or 'aborted'). W keeps the cause: retrying it revives this job (requeue_failed).
  function F.fail_waiting(base, id, cause, how, now, ttl)
    local key = job_key(base, id)
    redis.call('ZREM', base .. ':waiting', id)
    local reason = how == 'aborted' and 'dependency_aborted' or 'dependency_failed'
    redis.call('HSET', key, 's', 'failed', 'f', now, 'W', cause,
      'e', error_json(reason, 'DependencyFailed', 'its prerequisite ' .. cause .. ' ' .. how))
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', base .. ':failed', now, id)
    notify_ended(base, id, 'failed')
  end

  -- Whether dependent (hash at `key`) has counted the end of prerequisite `p` (field E).
  function F.counted(key, p)
    local ended = hash_field(key, 'E') or ''
    return string.find(' ' .. ended .. ' ', ' ' .. p .. ' ', 1, true) ~= nil, ended
  end

  -- The dependent at `key` counts prerequisite `p` as ended (once): its D left, or false when
  -- it had counted it already.
  function F.count_end(key, p)
    local already, ended = F.counted(key, p)
    if already then return false end
    redis.call('HSET', key, 'E', ended == '' and p or ended .. ' ' .. p)
    return redis.call('HINCRBY', key, 'D', -1)
  end

  -- A failed job of a flow to end after this one: queued on `todo` (finish() runs them all).
  function F.cascade(base, todo, id)
    local f = redis.call('HMGET', job_key(base, id), 'F', 'u')
    todo[#todo + 1] = {id, 'failed', f[1], f[2]}
  end

  -- Prerequisite `id` ended (`outcome`): each job waiting for it counts one fewer, and starts
  -- at none left; or, when it failed or was aborted, fails with it (unless its M is 'r').
  -- A dependent already failed (by another prerequisite, or aborted while it waited) still
  -- counts the success, so that retrying it finds its count right. The edge set goes with a
  -- success, and stays as long as a failed record (for requeue_failed) otherwise.
  function F.end_prerequisite(base, id, outcome, now, ttl, todo)
    local edges = F.dependents_key(base, id)
    for _, dep in ipairs(redis.call('SMEMBERS', edges)) do
      local key = job_key(base, dep)
      -- One that ran anyway and is done may have left only ack's string record, or none.
      local d = key_type(key) == 'hash' and redis.call('HMGET', key, 's', 'M') or {}
      local counts = outcome == 'done' or d[2] == 'r'
      if d[1] == 'waiting' or d[1] == 'failed' then
        if counts then
          local left = F.count_end(key, id)
          if left and left <= 0 and d[1] == 'waiting' then F.release_waiting(base, dep, now) end
        elseif d[1] == 'waiting' then
          F.fail_waiting(base, dep, id, outcome, now, ttl)
          F.cascade(base, todo, dep)
        end
      end
    end
    if outcome == 'done' then redis.call('DEL', edges) else redis.call('PEXPIRE', edges, ttl) end
  end

  -- Batch member `id` ended: count it; at the last one, the callback (if any) starts and the
  -- batch's keys expire after `ttl`. An on_success callback fails at the first member that
  -- does not succeed.
  function F.end_member(base, id, outcome, now, ttl, todo)
    local bid = hash_field(job_key(base, id), 'B')
    local bkey = bid and F.batch_key(base, bid)
    local b = bkey and redis.call('HMGET', bkey, 'left', 'cb', 'mode', 'ttl')
    if not b or not b[1] then return end  -- expired, or the member was retried after its batch closed
    ttl = tonumber(b[4]) or ttl  -- ack knows no failed TTL: the batch keeps the one it was made with
    local good = outcome == 'done'
    local ids = bkey .. (good and ':ok' or ':ko')
    redis.call('HINCRBY', bkey, good and 'ok' or 'ko', 1)
    if redis.call('LLEN', ids) < F.BATCH_IDS_KEPT then redis.call('RPUSH', ids, id) end
    local left = redis.call('HINCRBY', bkey, 'left', -1)
    local cb = b[2] ~= '' and b[2]
    if cb and hash_field(job_key(base, cb), 's') == 'waiting' then
      -- on_success: any failed member fails it (ko counts them all; the id lists are capped).
      local failed = b[3] == 's' and (not good or tonumber(redis.call('HGET', bkey, 'ko')) > 0)
      if failed then
        local cause = good and (redis.call('LINDEX', bkey .. ':ko', 0) or 'batch:' .. bid) or id
        F.fail_waiting(base, cb, cause, good and 'failed' or outcome, now, ttl)
        F.cascade(base, todo, cb)
      elseif left <= 0 then
        F.release_waiting(base, cb, now)
      end
    end
    if left <= 0 then
      for _, k in ipairs({bkey, bkey .. ':ok', bkey .. ':ko'}) do redis.call('PEXPIRE', k, ttl) end
    end
  end
  built_flows = F
  return F
end

-- finish: the last step of every move into a final state (done by ack, failed by fail,
-- reap's stalled branch or quarantine, aborted), run inside the script that makes the move,
-- so its effects are atomic with it. Those scripts are token-fenced and answer a replay
-- through settled_by before they get here, so finish() runs once per job end.
--   base, id    the job's queue base and id (its hash still exists)
--   outcome     'done', 'failed' or 'aborted'
--   now         ms, Redis time (or the test's)
--   flags, u    the job's F and u fields, read by the caller before it changes the hash
--               (ack reads them with the c it already reads: no extra command)
--   ttl         how long failed records are kept (ms; default DEFAULT_FAILED_TTL_MS)
-- A plain job has no F: finish() returns at once, without a command. Work hung on a job's
-- end goes here, each piece behind its own flag letter: 'u'/'s' unique lock, 'b' batch
-- member, 'd' prerequisite. The jobs of a flow that fail with it end here too, one after
-- the other (a list, not recursion: a chain may be long). Returns nothing.
local DEFAULT_FAILED_TTL_MS = 7 * 86400000

local function finish(base, id, outcome, now, flags, u, ttl)
  if not flags then return end
  ttl = tonumber(ttl) or DEFAULT_FAILED_TTL_MS
  local todo = {{id, outcome, flags, u}}
  local i = 1
  while todo[i] do
    local job, how, f, lock = todo[i][1], todo[i][2], todo[i][3], todo[i][4]
    i = i + 1
    if f and lock and string.find(f, '[us]') then
      release_unique(base, job, lock)
      -- A "replace" dispatch made while this job ran left the newest payload as its successor.
      local next_key = successor_key(base, lock)
      local s = redis.call('HMGET', next_key, 'i', 'p', 'n', 'm', 'q', 'y', 'F', 'o', 'g')
      if s[1] and redis.call('EXISTS', job_key(base, s[1])) == 0 then
        store_job(base, s[5], s[1], s[3], s[4], s[2], now, now + (tonumber(s[6]) or 0), s[7], lock,
          tonumber(s[8] or ''), s[9])
        wake(base .. ':wake')
      end
      redis.call('DEL', next_key)
    end
    if f and string.find(f, 'b', 1, true) then flows().end_member(base, job, how, now, ttl, todo) end
    if f and string.find(f, 'd', 1, true) then flows().end_prerequisite(base, job, how, now, ttl, todo) end
  end
end

-- Move a job that cannot be run aside into the failed set, with the reason recorded.
-- A key of the wrong type is renamed to <base>:bad:<id> so nothing is destroyed.
local function quarantine(base, failed_key, id, reason, message, now, failed_ttl)
  local key = job_key(base, id)
  local kind = key_type(key)
  local f = kind == 'hash' and redis.call('HMGET', key, 'F', 'u') or {}
  if kind ~= 'hash' and kind ~= 'none' then
    redis.call('RENAME', key, bad_key(base, id))
    redis.call('PEXPIRE', bad_key(base, id), failed_ttl)
  end
  redis.call('HSET', key, 's', 'failed', 'f', now, 'e', error_json(reason, 'MalformedJob', message),
    'v', FORMAT_VERSION)
  redis.call('HDEL', key, 't', 'w')
  redis.call('PEXPIRE', key, failed_ttl)
  redis.call('ZADD', failed_key, now, id)
  finish(base, id, 'failed', now, f[1], f[2], failed_ttl)
end

-- Abort: end a job as aborted (no attempt used). It goes to the failed set with reason
-- "aborted", so `failed list` shows it and `failed retry` revives it. The field x answers a
-- replay of the same abort call (its abort id). An aborted job's end is a final state like
-- any other: finish() releases its unique lock (and stores a "replace" successor), and
-- waiters for its result are told.
local function mark_aborted(base, failed_key, id, abort_id, err, now, failed_ttl)
  local key = job_key(base, id)
  local f = redis.call('HMGET', key, 'F', 'u')
  redis.call('HSET', key, 's', 'failed', 'f', now, 'e', err, 'x', 'abort ' .. abort_id)
  redis.call('HDEL', key, 't', 'w')
  redis.call('PEXPIRE', key, failed_ttl)
  redis.call('ZADD', failed_key, now, id)
  finish(base, id, 'aborted', now, f[1], f[2], failed_ttl)
  notify_ended(base, id, 'aborted')  -- result waiters wake at once
end
