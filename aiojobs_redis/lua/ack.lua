-- ack: the job succeeded; end it, if this worker still holds its lease.
-- KEYS[1] running zset   KEYS[2] job hash
-- ARGV[1] id  ARGV[2] token  ARGV[3] keep finished record ms (0: delete)
-- ARGV[4] replay guard ms  ARGV[5] now ms ('' = TIME)
-- Returns 1 when acknowledged, 0 when the lease is no longer held (or already acknowledged).
-- After deletion a small "done" marker stays at the job key until created + guard, so that a
-- dispatch replayed by the client cannot store the same job again.
local running_key, job_key = KEYS[1], KEYS[2]
local id, token, keep, guard = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if hash_field(job_key, 't') ~= token then return 0 end
local now = now_ms(ARGV[5])
redis.call('ZREM', running_key, id)
if keep > 0 then
  redis.call('HSET', job_key, 's', 'done', 'f', now)
  redis.call('HDEL', job_key, 't', 'w')
  redis.call('PEXPIRE', job_key, keep)
else
  local created = tonumber(redis.call('HGET', job_key, 'c')) or 0
  redis.call('DEL', job_key)
  local left = created + guard - now
  if left > 0 then redis.call('SET', job_key, 'done', 'PX', left) end
end
return 1
