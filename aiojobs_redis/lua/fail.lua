-- fail: end the job in the failed set (attempts exhausted, permanent failure, bad record).
-- KEYS[1] running zset  KEYS[2] failed zset  KEYS[3] job hash
-- ARGV[1] id  ARGV[2] token  ARGV[3] error JSON  ARGV[4] failed TTL ms
-- ARGV[5] 1 to count this run as an attempt, else 0  ARGV[6] now ms ('' = TIME)
-- ARGV[7] queue key base (jobs:{q}), for finish()  ARGV[8] '1' when the job keeps its result:
--   its waiters are told
-- Returns 1 when moved to failed (now, or already by this token: a replay), 0 when the lease
-- is no longer held (nothing changes).
local running_key, failed_key, key = KEYS[1], KEYS[2], KEYS[3]
local id, token, err, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if hash_field(key, 't') ~= token then return settled_by(key, 'fail', token) and 1 or 0 end
local now = now_ms(ARGV[6])
local base = ARGV[7]
local f = redis.call('HMGET', key, 'F', 'u', 'g')
redis.call('ZREM', running_key, id)
group_left(base, f[3])
if ARGV[5] == '1' then redis.call('HINCRBY', key, 'a', 1) end
redis.call('HSET', key, 's', 'failed', 'f', now, 'e', err)
redis.call('HDEL', key, 't', 'w')
redis.call('HSET', key, 'x', 'fail ' .. token)
redis.call('PEXPIRE', key, ttl)
redis.call('ZADD', failed_key, now, id)
finish(base, id, 'failed', now, f[1], f[2], ttl)
if ARGV[8] == '1' then notify_ended(base, id, 'failed') end
return 1
