-- dispatch: store new jobs of one queue and one kind, and make them ready (or delayed).
-- KEYS[1] ready zset  KEYS[2] delayed zset  KEYS[3] wake list
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] queue  ARGV[3] max payload bytes
-- ARGV[4] now ms ('' = Redis TIME)  ARGV[5] job name  ARGV[6] max attempts  ARGV[7] delay ms
-- ARGV[8] deadline ms in Redis time ('' = none): a call that reaches Redis later stores nothing
-- ARGV[9..] two per job: id, payload JSON
-- Returns the number of jobs stored, or -1 when the call came after its deadline (its caller
-- has given up; a late copy must not store a job that may already have run and ended). A job whose id already exists is left alone (a replayed
-- call, or the marker of a job already done): replaying the whole call changes nothing.
-- Every payload is checked before anything is written, so an oversized one stores nothing.
-- Job keys are built here from the queue's base, so they share its hash tag (one slot).
local ready_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base, queue, max_payload = ARGV[1], ARGV[2], tonumber(ARGV[3])
local name, max_attempts, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])

for a = 10, #ARGV, 2 do
  if string.len(ARGV[a]) > max_payload then
    return redis.error_reply('ERR payload too large: ' .. string.len(ARGV[a]) .. ' bytes')
  end
end

local now = now_ms(ARGV[4])
local deadline = tonumber(ARGV[8])
if deadline and now > deadline then return -1 end
local due, state, target = now, 'ready', ready_key
if delay > 0 then due, state, target = now + delay, 'delayed', delayed_key end
local stored = 0
for a = 9, #ARGV, 2 do
  local id = ARGV[a]
  local job_key = base .. ':j:' .. id
  if redis.call('EXISTS', job_key) == 0 then
    redis.call('HSET', job_key, 'n', name, 'q', queue, 'p', ARGV[a + 1], 'm', max_attempts,
      's', state, 'c', now, 'd', due)
    redis.call('ZADD', target, due, id)
    stored = stored + 1
  end
end
-- Wake an idle worker: for ready work, or so it re-plans around a new earliest delayed job
-- (every job of this call has the same due time).
if stored > 0 then
  if delay == 0 or tonumber(redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')[2]) == due then
    wake(wake_key)
  end
end
return stored
