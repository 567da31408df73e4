-- dispatch: store a new job and make it ready (or delayed).
-- KEYS[1] job hash   KEYS[2] ready zset   KEYS[3] delayed zset   KEYS[4] wake list
-- ARGV[1] id  ARGV[2] name  ARGV[3] payload JSON  ARGV[4] max attempts  ARGV[5] delay ms
-- ARGV[6] max payload bytes  ARGV[7] queue  ARGV[8] now ms ('' = Redis TIME)
-- Returns 1 when stored, 0 when the id already exists (a replayed call: nothing changes).
local job_key, ready_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, name, payload = ARGV[1], ARGV[2], ARGV[3]
local max_attempts, delay = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_payload, queue = tonumber(ARGV[6]), ARGV[7]

if redis.call('EXISTS', job_key) == 1 then return 0 end
if string.len(payload) > max_payload then
  return redis.error_reply('ERR payload too large: ' .. string.len(payload) .. ' bytes')
end

local now = now_ms(ARGV[8])
local due = now + delay
if delay > 0 then
  redis.call('HSET', job_key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts,
    's', 'delayed', 'c', now, 'd', due)
  redis.call('ZADD', delayed_key, due, id)
  -- A new earliest delayed job: wake an idle worker so it re-plans its next promotion.
  if redis.call('ZRANGE', delayed_key, 0, 0)[1] == id then wake(wake_key) end
else
  redis.call('HSET', job_key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts,
    's', 'ready', 'c', now, 'd', now)
  redis.call('ZADD', ready_key, now, id)
  wake(wake_key)
end
return 1
