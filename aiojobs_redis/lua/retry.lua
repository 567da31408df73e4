-- retry: the attempt failed and attempts remain; queue the job again after a delay.
-- KEYS[1] running zset  KEYS[2] queue list  KEYS[3] delayed zset  KEYS[4] wake list  KEYS[5] job
-- ARGV[1] id  ARGV[2] token  ARGV[3] delay ms  ARGV[4] error JSON  ARGV[5] now ms ('' = TIME)
-- ARGV[6] queue key base (jobs:{q}): a job of a priority level goes back to its level's list,
-- one of a rate group to its group's (and leaves the group's running count)
-- Returns 1 when requeued (now, or already by this token: a replay), 0 when the lease is no
-- longer held (nothing changes).
local running_key, ready_key, delayed_key, wake_key, key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, token, delay, err = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if hash_field(key, 't') ~= token then return settled_by(key, 'retry', token) and 1 or 0 end
local now = now_ms(ARGV[5])
redis.call('ZREM', running_key, id)
group_left(ARGV[6], redis.call('HGET', key, 'g'))
redis.call('HINCRBY', key, 'a', 1)
redis.call('HDEL', key, 't', 'w')
redis.call('HSET', key, 'x', 'retry ' .. token)
if delay > 0 then
  redis.call('HSET', key, 's', 'delayed', 'd', now + delay, 'e', err)
  redis.call('ZADD', delayed_key, now + delay, id)
  if redis.call('ZRANGE', delayed_key, 0, 0)[1] == id then wake(wake_key) end
else
  redis.call('HSET', key, 's', 'ready', 'd', now, 'e', err)
  push_ready(ARGV[6], id, false)
  wake(wake_key)
end
return 1
