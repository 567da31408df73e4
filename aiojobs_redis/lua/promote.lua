-- promote: move delayed jobs whose time has come to the tail of the queue list.
-- KEYS[1] delayed zset  KEYS[2] queue list  KEYS[3] wake list
-- KEYS[4] the ready zset of earlier versions (drained into the queue list, oldest first)
-- ARGV[1] queue key base  ARGV[2] max jobs  ARGV[3] now ms ('' = TIME)
-- Returns {number moved, ms until the next delayed job is due (-1: none, 0: more due now)}
local delayed_key, ready_key, wake_key, legacy_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local moved = 0

local function push(id)
  redis.call('RPUSH', ready_key, id)
  local key = base .. ':j:' .. id
  if key_type(key) == 'hash' then redis.call('HSET', key, 's', 'ready') end
  moved = moved + 1
end

-- Jobs queued by an earlier version, which kept ready jobs in a sorted set under that name.
if key_type(legacy_key) == 'zset' then
  for _, id in ipairs(redis.call('ZRANGE', legacy_key, 0, limit - 1)) do
    redis.call('ZREM', legacy_key, id)
    push(id)
  end
end

-- In due order: jobs run in the order they were scheduled.
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'LIMIT', 0, limit - moved)
for _, id in ipairs(due) do
  redis.call('ZREM', delayed_key, id)
  push(id)
end
if moved > 0 then wake(wake_key) end
local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
local next_due = -1
if first[2] then next_due = math.max(0, tonumber(first[2]) - now) end
if key_type(legacy_key) == 'zset' then next_due = 0 end  -- more of them to move
return {moved, next_due}
