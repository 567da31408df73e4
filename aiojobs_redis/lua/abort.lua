-- abort: end a job that has not ended yet as aborted; a running one's lease is revoked here.
-- KEYS[1] queue list  KEYS[2] delayed zset  KEYS[3] running zset  KEYS[4] failed zset
-- KEYS[5] aborted runs zset ("<id> <token>" -> when aborted, ms): what workers look for
-- ARGV[1] queue key base  ARGV[2] id  ARGV[3] abort id (unique per abort call)
-- ARGV[4] error JSON  ARGV[5] failed TTL ms  ARGV[6] now ms ('' = TIME)
-- ARGV[7] the job's inline record in the queue list (or the rate group list passed as
--   KEYS[1] instead), as the caller found it ('' = none)
-- ARGV[8] queue name  ARGV[9] how long a mark in KEYS[5] is kept, ms
-- ARGV[10] the priority level of the list the caller found the record in ('' or 0: KEYS[1])
-- Returns {1, state it was in (ready, delayed, running, waiting)} when aborted now, {1, 'replayed'}
-- when this abort id already did it (a replayed call), else {0, 'already_final'} (done or
-- failed), {0, 'not_found'}, or {0, 'too_new'} (a record of a newer format: left alone).
-- An inline record is removed with LREM of that exact entry from the list it waits in (the
-- queue list or its level's, <base>:queue:p<N>); when it is gone (a claim took it meanwhile)
-- the job's hash decides, in this same call. A job waiting by id is taken out of the list of
-- its level (field o). A level list left empty is dropped from <base>:levels. A running job
-- is final at once: its holder's late ack, retry or fail finds no token and changes nothing;
-- the holder sees the mark in KEYS[5] (one read per second while it runs jobs) and cancels
-- handle().
local ready_key, delayed_key, running_key, failed_key, marks_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local base, id, abort_id, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local failed_ttl, entry, queue, keep_mark = tonumber(ARGV[5]), ARGV[7], ARGV[8], tonumber(ARGV[9])
local now = now_ms(ARGV[6])
local key = job_key(base, id)

-- The list of ready jobs at `level` (a number or a string; '' and 0: the queue list).
local function ready_list(level)
  level = tonumber(level) or 0
  if level == 0 or level ~= math.floor(level) or level < -10 or level > 10 then return ready_key, 0 end
  return ready_key .. ':p' .. string.format('%d', level), level
end

-- LREM `entry` from the ready list of `level`: 1 when it was there.
local function take_out(level, entry)
  local list, n = ready_list(level)
  if redis.call('LREM', list, 1, entry) == 0 then return 0 end
  if n ~= 0 and redis.call('LLEN', list) == 0 then redis.call('ZREM', base .. ':levels', n) end
  return 1
end

-- LREM job id `id` from the list it waits in: its rate group's (field g), else its level's.
local function take_out_id(level, group)
  if group then return redis.call('LREM', group_list(base, group), 1, id) end
  return take_out(level, id)
end

if entry ~= '' and key_type(key) == 'none' then
  local version, from = inline_version(entry)
  local found, name, max_attempts, created, payload = parse_inline(entry, from)
  if version <= FORMAT_VERSION and found == id and take_out(ARGV[10], entry) == 1 then
    redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts, 'c', created,
      'd', created, 'a', 0, 'v', FORMAT_VERSION)
    local _, level = ready_list(ARGV[10])
    if level ~= 0 then redis.call('HSET', key, 'o', level) end  -- `failed retry` keeps it
    mark_aborted(base, failed_key, id, abort_id, err, now, failed_ttl)
    return {1, 'ready'}
  end
end

local kind = key_type(key)
if kind == 'string' then return {0, 'already_final'} end  -- acked: "done <token>"
if kind ~= 'hash' then return {0, 'not_found'} end
local f = redis.call('HMGET', key, 's', 't', 'x', 'v', 'o', 'g')
if f[3] == 'abort ' .. abort_id then return {1, 'replayed'} end
if record_version(f[4]) > FORMAT_VERSION then return {0, 'too_new'} end
local state
if f[2] and redis.call('ZSCORE', running_key, id) then
  redis.call('ZREM', running_key, id)
  group_left(base, redis.call('HGET', key, 'g'))
  redis.call('ZREMRANGEBYSCORE', marks_key, '-inf', now - keep_mark)
  redis.call('ZADD', marks_key, now, id .. ' ' .. f[2])
  state = 'running'
elseif redis.call('ZREM', delayed_key, id) == 1 then
  state = 'delayed'
elseif f[1] == 'ready' and take_out_id(f[5], f[6]) == 1 then
  state = 'ready'
elseif f[1] == 'waiting' and redis.call('ZREM', base .. ':waiting', id) == 1 then
  state = 'waiting'  -- for its prerequisites (a flow): finish() fails its own dependents
elseif f[1] == 'done' or f[1] == 'failed' or redis.call('ZSCORE', failed_key, id) then
  return {0, 'already_final'}
else
  return {0, 'not_found'}
end
mark_aborted(base, failed_key, id, abort_id, err, now, failed_ttl)
return {1, state}
