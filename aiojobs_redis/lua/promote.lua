-- promote: move delayed jobs whose time has come to the tail of the queue list.
-- KEYS[1] delayed zset  KEYS[2] queue list  KEYS[3] wake list
-- ARGV[1] queue key base  ARGV[2] max jobs  ARGV[3] now ms ('' = TIME)
-- Returns {number moved, ms until the next delayed job is due (-1: none, 0: more due now),
--          the format version of a record too new to handle (0: none)}
-- A record of a newer format version stops the promotion before it: it stays delayed.
local delayed_key, ready_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local moved, newer = 0, 0

-- In due order: jobs run in the order they were scheduled.
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local key = job_key(base, id)
  if key_type(key) == 'hash' then
    local version = record_version(redis.call('HGET', key, 'v'))
    if version > FORMAT_VERSION then
      newer = version
      break
    end
    redis.call('HSET', key, 's', 'ready')
  end
  redis.call('ZREM', delayed_key, id)
  if key_type(key) == 'hash' then push_ready(base, id, false) else redis.call('RPUSH', ready_key, id) end
  moved = moved + 1
end
if moved > 0 then wake(wake_key) end
if newer > 0 then return {moved, -1, newer} end
local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
local next_due = -1
if first[2] then next_due = math.max(0, tonumber(first[2]) - now) end
return {moved, next_due, 0}
