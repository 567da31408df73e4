-- abort: end a job that has not ended yet as aborted; a running one's lease is revoked here.
-- KEYS[1] queue list  KEYS[2] delayed zset  KEYS[3] running zset  KEYS[4] failed zset
-- KEYS[5] aborted runs zset ("<id> <token>" -> when aborted, ms): what workers look for
-- ARGV[1] queue key base  ARGV[2] id  ARGV[3] abort id (unique per abort call)
-- ARGV[4] error JSON  ARGV[5] failed TTL ms  ARGV[6] now ms ('' = TIME)
-- ARGV[7] the job's inline record in the queue list (or the rate group list passed as
--   KEYS[1] instead), as the caller found it ('' = none)
-- ARGV[8] queue name  ARGV[9] how long a mark in KEYS[5] is kept, ms
-- Returns {1, state it was in (ready, delayed, running)} when aborted now, {1, 'replayed'}
-- when this abort id already did it (a replayed call), else {0, 'already_final'} (done or
-- failed), {0, 'not_found'}, or {0, 'too_new'} (a record of a newer format: left alone).
-- An inline record is removed with LREM of that exact entry; when it is gone (a claim took
-- it meanwhile) the job's hash decides, in this same call. A running job is final at once:
-- its holder's late ack, retry or fail finds no token and changes nothing; the holder sees
-- the mark in KEYS[5] (one read per second while it runs jobs) and cancels handle().
local ready_key, delayed_key, running_key, failed_key, marks_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local base, id, abort_id, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local failed_ttl, entry, queue, keep_mark = tonumber(ARGV[5]), ARGV[7], ARGV[8], tonumber(ARGV[9])
local now = now_ms(ARGV[6])
local key = job_key(base, id)

-- Where a ready job's id waits: its rate group's list (field g), else the queue list.
local function group_of_ready(job, list)
  local group = redis.call('HGET', job, 'g')
  if group then return group_list(base, group) end
  return list
end

if entry ~= '' and key_type(key) == 'none' then
  local version, from = inline_version(entry)
  local found, name, max_attempts, created, payload = parse_inline(entry, from)
  if version <= FORMAT_VERSION and found == id and redis.call('LREM', ready_key, 1, entry) == 1 then
    redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts, 'c', created,
      'd', created, 'a', 0, 'v', FORMAT_VERSION)
    mark_aborted(base, failed_key, id, abort_id, err, now, failed_ttl)
    return {1, 'ready'}
  end
end

local kind = key_type(key)
if kind == 'string' then return {0, 'already_final'} end  -- acked: "done <token>"
if kind ~= 'hash' then return {0, 'not_found'} end
local f = redis.call('HMGET', key, 's', 't', 'x', 'v')
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
elseif f[1] == 'ready' and redis.call('LREM', group_of_ready(key, ready_key), 1, id) == 1 then
  state = 'ready'
elseif f[1] == 'done' or f[1] == 'failed' or redis.call('ZSCORE', failed_key, id) then
  return {0, 'already_final'}
else
  return {0, 'not_found'}
end
mark_aborted(base, failed_key, id, abort_id, err, now, failed_ttl)
return {1, state}
