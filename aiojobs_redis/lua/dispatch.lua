-- dispatch: store new jobs of one queue and make them ready (or delayed).
-- KEYS[1] ready zset  KEYS[2] delayed zset  KEYS[3] wake list  KEYS[4..] one job hash per job
-- ARGV[1] queue  ARGV[2] max payload bytes  ARGV[3] now ms ('' = Redis TIME)
-- ARGV[4..] five per job, in KEYS order: id, name, payload JSON, max attempts, delay ms
-- Returns the number of jobs stored. A job whose id already exists is left alone (a replayed
-- call, or the marker of a job already done): replaying the whole call changes nothing.
-- Every payload is checked before anything is written, so an oversized one stores nothing.
local ready_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local queue, max_payload = ARGV[1], tonumber(ARGV[2])

for a = 6, #ARGV, 5 do
  if string.len(ARGV[a]) > max_payload then
    return redis.error_reply('ERR payload too large: ' .. string.len(ARGV[a]) .. ' bytes')
  end
end

local now = now_ms(ARGV[3])
local stored, ready, earliest_delayed = 0, 0, false
for k = 4, #KEYS do
  local a = 4 + (k - 4) * 5
  local job_key, id, name, payload = KEYS[k], ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local max_attempts, delay = ARGV[a + 3], tonumber(ARGV[a + 4])
  if redis.call('EXISTS', job_key) == 0 then
    if delay > 0 then
      redis.call('HSET', job_key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts,
        's', 'delayed', 'c', now, 'd', now + delay)
      redis.call('ZADD', delayed_key, now + delay, id)
      earliest_delayed = earliest_delayed or redis.call('ZRANGE', delayed_key, 0, 0)[1] == id
    else
      redis.call('HSET', job_key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts,
        's', 'ready', 'c', now, 'd', now)
      redis.call('ZADD', ready_key, now, id)
      ready = ready + 1
    end
    stored = stored + 1
  end
end
-- Wake an idle worker: for ready work, or so it re-plans around a new earliest delayed job.
if ready > 0 or earliest_delayed then wake(wake_key) end
return stored
