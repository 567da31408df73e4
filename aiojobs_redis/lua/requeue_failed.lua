-- requeue_failed: give failed jobs a fresh set of attempts (the "failed retry" command).
-- KEYS[1] failed zset  KEYS[2] queue list  KEYS[3] wake list
-- ARGV[1] queue key base  ARGV[2] now ms ('' = TIME)  ARGV[3] max jobs when no ids are given
-- ARGV[4..] ids to requeue; none means the oldest ARGV[3] failed jobs
-- Returns {number requeued, number skipped (not failed here, not runnable, or of a newer format,
--          or unique with its key held), {id, id of the live job holding its unique key, ...}}
-- A unique job takes its key's lock again; while another live job holds it, it is skipped.
local failed_key, ready_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base = ARGV[1]
local now = now_ms(ARGV[2])
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', failed_key, 0, tonumber(ARGV[3]) - 1) end
local requeued, skipped, held = 0, 0, {}

-- The live job other than `id` that holds the unique key of the job at `key`, if any.
local function key_holder(key, id)
  local suffix = hash_field(key, 'u')
  if not suffix then return false end
  local holder = redis.call('GET', unique_lock(base, suffix))
  if holder and holder ~= id and is_live(job_key(base, holder)) then return holder end
  return false
end

for _, id in ipairs(ids) do
  local key = job_key(base, id)
  local runnable = redis.call('ZSCORE', failed_key, id) and hash_field(key, 'n') and hash_field(key, 'p')
    and record_version(hash_field(key, 'v')) <= FORMAT_VERSION
  local holder = runnable and key_holder(key, id)
  if holder then
    held[#held + 1] = id; held[#held + 1] = holder
    skipped = skipped + 1
  elseif runnable then
    local suffix = hash_field(key, 'u')
    if suffix then redis.call('SET', unique_lock(base, suffix), id) end
    redis.call('ZREM', failed_key, id)
    redis.call('HSET', key, 's', 'ready', 'a', 0, 'l', 0, 'd', now)
    redis.call('HDEL', key, 'h')  -- and a fresh allowance of throttles (RateLimited)
    redis.call('PERSIST', key)
    push_ready(base, id, false)
    requeued = requeued + 1
  else
    skipped = skipped + 1
  end
end
if requeued > 0 then wake(wake_key) end
return {requeued, skipped, held}
