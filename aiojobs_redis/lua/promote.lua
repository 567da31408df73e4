-- promote: move delayed jobs whose time has come to the ready set.
-- KEYS[1] delayed zset  KEYS[2] ready zset  KEYS[3] wake list
-- ARGV[1] queue key base  ARGV[2] max jobs  ARGV[3] now ms ('' = TIME)
-- Returns {number moved, ms until the next delayed job is due (-1: none, 0: more due now)}
local delayed_key, ready_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local moved = 0
for i = 1, #due, 2 do
  local id, score = due[i], due[i + 1]
  redis.call('ZREM', delayed_key, id)
  -- Keep the due time as the score: jobs run in the order they were scheduled.
  redis.call('ZADD', ready_key, score, id)
  local key = base .. ':j:' .. id
  if key_type(key) == 'hash' then redis.call('HSET', key, 's', 'ready') end
  moved = moved + 1
end
if moved > 0 then wake(wake_key) end
local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
local next_due = -1
if first[2] then next_due = math.max(0, tonumber(first[2]) - now) end
return {moved, next_due}
