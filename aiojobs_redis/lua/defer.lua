-- defer: put a running job back, delayed, without using an attempt: no worker here can run it
-- yet (its name is unknown to this one; another, or a newer deploy, may know it).
-- KEYS[1] running zset  KEYS[2] delayed zset  KEYS[3] wake list  KEYS[4] job hash
-- ARGV[1] id  ARGV[2] token  ARGV[3] delay ms  ARGV[4] error JSON
-- ARGV[5] give up after ms: when the job has been due (field d; else created, c) for longer,
--         nothing changes and -1 is returned (the caller fails it)
-- ARGV[6] now ms ('' = TIME)  ARGV[7] queue key base (jobs:{q}): a job of a rate group
-- leaves its group's running count
-- Returns 1 when deferred (now, or already by this token: a replay), 0 when the lease is no
-- longer held, -1 when the job has waited past ARGV[5] (nothing changes).
-- Field d is left as it was: it keeps saying since when the job has been due, which is what
-- the give-up time is measured from.
local running_key, delayed_key, wake_key, key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, token, delay, err, give_up = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if hash_field(key, 't') ~= token then return settled_by(key, 'defer', token) and 1 or 0 end
local now = now_ms(ARGV[6])
local since = tonumber(redis.call('HGET', key, 'd') or '') or tonumber(redis.call('HGET', key, 'c') or '') or now
if now - since >= give_up then return -1 end
redis.call('ZREM', running_key, id)
group_left(ARGV[7], redis.call('HGET', key, 'g'))
redis.call('HDEL', key, 't', 'w')
redis.call('HSET', key, 's', 'delayed', 'e', err, 'x', 'defer ' .. token)
redis.call('ZADD', delayed_key, now + delay, id)
if redis.call('ZRANGE', delayed_key, 0, 0)[1] == id then wake(wake_key) end
return 1
