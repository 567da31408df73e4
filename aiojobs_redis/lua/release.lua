-- release: hand a running job back to its queue without using an attempt (worker shutdown).
-- KEYS[1] running zset  KEYS[2] queue list  KEYS[3] wake list  KEYS[4] job hash
-- ARGV[1] id  ARGV[2] token  ARGV[3] queue key base (jobs:{q}): a job of a priority level
-- goes back to the head of its level's list, one of a rate group to its group's
-- Returns 1 when released (now, or already by this token: a replay), 0 when the lease is no
-- longer held (nothing changes).
local running_key, ready_key, wake_key, key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, token = ARGV[1], ARGV[2]
if hash_field(key, 't') ~= token then return settled_by(key, 'release', token) and 1 or 0 end
redis.call('ZREM', running_key, id)
group_left(ARGV[3], redis.call('HGET', key, 'g'))
redis.call('HSET', key, 's', 'ready')
redis.call('HDEL', key, 't', 'w')
redis.call('HSET', key, 'x', 'release ' .. token)
-- At the head of the line, where it came from, so a drain does not send it to the back.
push_ready(ARGV[3], id, true)
wake(wake_key)
return 1
