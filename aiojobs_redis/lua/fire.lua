-- fire: run one schedule's tick at most once, judged by Redis's clock.
-- KEYS[1] the queue's schedule state hash (jobs:{q}:cron)  KEYS[2] queue list  KEYS[3] wake list
-- ARGV[1] queue key base  ARGV[2] queue  ARGV[3] now ms ('' = Redis TIME)
-- ARGV[4] schedule id ('' = only note that a scheduler looked, and answer the time)
-- ARGV[5] tick ms: the latest tick at or before now, as the caller reckons
-- ARGV[6] the tick after it  ARGV[7] grace ms  ARGV[8] overlap allowed ('1') or not ('0')
-- ARGV[9] job name  ARGV[10] max attempts  ARGV[11] payload JSON  ARGV[12] the run's job id
-- ARGV[13] the job's priority level (-10..10; '' or 0: the queue list; see claim.lua)
-- Returns {outcome, Redis now ms, job id or ''}; outcome is one of
--   seen     ARGV[4] was '' (nothing else done)
--   early    the tick is later than Redis's now (a caller's clock ahead): nothing done
--   stale    the next tick is already due by Redis's now: nothing done, reckon again
--   already  the tick (or a later one) was handled: the job id of the last run
--   armed    a schedule seen for the first time: its tick is noted, not run (the first run
--            is the next tick, so deploying a daily schedule at noon does not run it at once)
--   late     the tick is older than the grace: counted as missed, not run
--   overlap  the last run is still queued or running (overlap '0'): counted as skipped
--   fired    the job is stored and ready: its id
-- Only the latest tick is ever considered, so missed ticks never pile up into a backlog.
-- Safe to replay: a second call finds its tick handled and answers 'already'.
-- Fields of KEYS[1], per schedule id S: S:last (tick handled) S:job (last run's id)
-- S:ran (Redis ms of the last run) S:next S:skipped (overlap) S:missed (late); and
-- _seen: Redis ms of the last call, which shows that some worker runs the schedules.
local state, wake_key = KEYS[1], KEYS[3]  -- KEYS[2]: push_ready() names the list itself
local base, queue = ARGV[1], ARGV[2]
local id = ARGV[4]
local now = now_ms(ARGV[3])

if id == '' then
  redis.call('HSET', state, '_seen', now)
  return {'seen', now, ''}
end
local tick, next_tick, grace = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local name, max_attempts, payload, job_id = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local level = tonumber(ARGV[13] or '') or 0
if not tick or not next_tick or not grace or next_tick <= tick then
  return redis.error_reply('ERR invalid schedule tick')
end
if not string.find(name, '^[%a_][%w_%.:<>%-]*$') or not string.find(max_attempts, '^%d+$') then
  return redis.error_reply('ERR invalid schedule job')
end
if string.len(job_id) > 64 or not string.find(job_id, '^[%w_%-]+$') then
  return redis.error_reply('ERR invalid job id')
end
if level ~= math.floor(level) or level < -10 or level > 10 then
  return redis.error_reply('ERR invalid priority')
end

redis.call('HSET', state, '_seen', now)
if tick > now then return {'early', now, ''} end
if next_tick <= now then return {'stale', now, ''} end
local last = tonumber(redis.call('HGET', state, id .. ':last'))
if last and last >= tick then
  return {'already', now, redis.call('HGET', state, id .. ':job') or ''}
end
redis.call('HSET', state, id .. ':last', tick, id .. ':next', next_tick)
if not last then return {'armed', now, ''} end
if now - tick > grace then
  redis.call('HINCRBY', state, id .. ':missed', 1)
  return {'late', now, ''}
end
if ARGV[8] ~= '1' then
  local previous = redis.call('HGET', state, id .. ':job')
  if previous then
    local s = hash_field(job_key(base, previous), 's')
    -- A hash in any state but an end one is queued, delayed, waiting to retry or running.
    if s and s ~= 'failed' and s ~= 'done' and s ~= 'aborted' then
      redis.call('HINCRBY', state, id .. ':skipped', 1)
      return {'overlap', now, previous}
    end
  end
end
local key = job_key(base, job_id)
if redis.call('EXISTS', key) == 0 then
  -- Due at its tick (d), as a delayed job is at its due time.
  redis.call('HSET', key, 'n', name, 'q', queue, 'p', payload, 'm', max_attempts, 's', 'ready',
    'c', now, 'd', tick, 'v', FORMAT_VERSION)
  if level ~= 0 then redis.call('HSET', key, 'o', level) end
  push_ready(base, job_id, false)
  wake(wake_key)
end
redis.call('HSET', state, id .. ':job', job_id, id .. ':ran', now)
return {'fired', now, job_id}
