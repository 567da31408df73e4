-- reap: return jobs whose lease lapsed to the queue, fail those that stalled too often,
-- and trim the failed set to its retention limits.
-- KEYS[1] running zset  KEYS[2] queue list  KEYS[3] failed zset  KEYS[4] wake list
-- KEYS[5] dropped counter (string): failed jobs trimmed by retention, in all
-- ARGV[1] queue key base  ARGV[2] max jobs  ARGV[3] max stalls  ARGV[4] failed TTL ms
-- ARGV[5] failed max count  ARGV[6] now ms ('' = TIME)
-- Returns { {requeued id...}, {failed (stalled) id...}, number of failed records trimmed,
--           the format version of a record too new to handle (0: none) }
-- The trimmed count is also added to KEYS[5]. A replayed call counts only what it removes
-- itself (an id already removed is not there to count), so the total is exact even when a
-- reply is lost; only the returned count of that lost reply is not seen.
-- Requeued jobs go back to the head of the queue list, in the order their leases lapsed.
-- A record of a newer format version stops the reap before it: it is left as it is (a job
-- hash whose v is newer, or a member tagged '!N:' with N newer, whatever follows the tag).
local running_key, ready_key, failed_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dropped_key = KEYS[5]
local base, limit, max_stalls = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local failed_ttl, failed_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms(ARGV[6])
local requeued, stalled = {}, {}
local newer = 0

local lapsed = redis.call('ZRANGEBYSCORE', running_key, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(lapsed) do
  local key = job_key(base, id)
  local kind = key_type(key)
  local version = 1
  if string.sub(id, 1, 1) == INLINE_TAG then
    version = inline_version(id)  -- a tagged record, not an id: a newer release's
  elseif kind == 'hash' then
    version = record_version(redis.call('HGET', key, 'v'))
  end
  if version > FORMAT_VERSION then
    newer = version
    break
  end
  redis.call('ZREM', running_key, id)
  if kind ~= 'hash' then
    quarantine(base, failed_key, id, 'dangling', 'running id had no job record', now, failed_ttl)
    stalled[#stalled + 1] = id
  else
    group_left(base, redis.call('HGET', key, 'g'))  -- its run is over, one way or the other
    local stalls = redis.call('HINCRBY', key, 'l', 1)
    redis.call('HDEL', key, 't', 'w')
    if stalls > max_stalls then
      local f = redis.call('HMGET', key, 'F', 'u')
      redis.call('HSET', key, 's', 'failed', 'f', now, 'e', error_json('stalled', 'Stalled',
        'the lease lapsed ' .. stalls .. ' times: the job keeps killing or hanging its worker'))
      redis.call('PEXPIRE', key, failed_ttl)
      redis.call('ZADD', failed_key, now, id)
      finish(base, id, 'failed', now, f[1], f[2], failed_ttl)
      stalled[#stalled + 1] = id
    else
      redis.call('HSET', key, 's', 'ready')
      requeued[#requeued + 1] = id
    end
  end
end
if #requeued > 0 then
  for i = #requeued, 1, -1 do push_ready(base, requeued[i], true) end
  wake(wake_key)
end
if newer > 0 then return {requeued, stalled, 0, newer} end

-- Retention: records expire by their own TTL; drop their ids, then cap the count.
local trimmed = 0
local expired = redis.call('ZRANGEBYSCORE', failed_key, '-inf', now - failed_ttl, 'LIMIT', 0, 1000)
local excess = redis.call('ZCARD', failed_key) - #expired - failed_max
if excess > 0 then
  local oldest = redis.call('ZRANGE', failed_key, #expired, #expired + math.min(excess, 1000) - 1)
  for _, id in ipairs(oldest) do expired[#expired + 1] = id end
end
for _, id in ipairs(expired) do
  redis.call('ZREM', failed_key, id)
  redis.call('DEL', job_key(base, id), bad_key(base, id))
  trimmed = trimmed + 1
end
if trimmed > 0 then redis.call('INCRBY', dropped_key, trimmed) end
return {requeued, stalled, trimmed, 0}
