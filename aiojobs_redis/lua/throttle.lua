-- throttle: handle() raised RateLimited (a partner said "too many requests"): put the running
-- job back at the head of its group's list (or its level's, or the queue list), using no
-- attempt, and hold its group (a job without a group: its whole queue) until retry_after has
-- passed, so that no worker starts a job of it before then.
-- KEYS[1] running zset  KEYS[2] wake list  KEYS[3] job hash
-- ARGV[1] id  ARGV[2] token  ARGV[3] queue key base (jobs:{q})  ARGV[4] retry after ms
-- ARGV[5] max throttles  ARGV[6] now ms ('' = TIME)
-- Returns 1 when put back (now, or already by this token: a replay), 0 when the lease is no
-- longer held (nothing changes), -1 when the job was throttled max throttles times already
-- (nothing changes: the caller counts the run as a failed attempt, reason rate_limited).
-- The job's throttle count is its field h. A group is held by moving its start rate's
-- theoretical arrival time (<base>:grl:<group>, µs) so that its next start is allowed at
-- now + retry after (claim.lua obeys it with or without a group rate); a queue by its
-- control field `hold` (ms), which claim.lua reads with the others.
local running_key, wake_key, key = KEYS[1], KEYS[2], KEYS[3]
local id, token, base = ARGV[1], ARGV[2], ARGV[3]
local after, max_throttles = tonumber(ARGV[4]), tonumber(ARGV[5])
if hash_field(key, 't') ~= token then return settled_by(key, 'throttle', token) and 1 or 0 end
local now = now_ms(ARGV[6])
local f = redis.call('HMGET', key, 'h', 'g')
local throttles = tonumber(f[1] or '') or 0
if throttles >= max_throttles then return -1 end
local group = f[2]
local meta_key = base .. ':meta'
local until_ms = now + math.max(after, 0)
if group then
  local ctl = redis.call('HMGET', meta_key, 'grate', 'o:grate', 'gburst', 'o:gburst')
  local function setting(declared, override)
    local value = tonumber(override or declared)
    if value and value > 0 then return value end
    return nil
  end
  local grate, gburst = setting(ctl[1], ctl[2]), setting(ctl[3], ctl[4]) or 1
  local grl_key = base .. ':grl:' .. group
  local tat = until_ms * 1000 + (grate and (gburst - 1) * grate or 0)
  if tat > (tonumber(redis.call('GET', grl_key) or '') or 0) then
    redis.call('SET', grl_key, string.format('%d', tat), 'PX', math.ceil(tat / 1000 - now) + 1)
  end
elseif until_ms > (tonumber(redis.call('HGET', meta_key, 'hold') or '') or 0) then
  redis.call('HSET', meta_key, 'hold', until_ms)
end
redis.call('ZREM', running_key, id)
group_left(base, group)
redis.call('HSET', key, 's', 'ready', 'h', throttles + 1, 'x', 'throttle ' .. token)
redis.call('HDEL', key, 't', 'w')
push_ready(base, id, true)
wake(wake_key)
return 1
