-- dispatch: store new jobs of one queue and one kind, and make them ready (or delayed).
-- KEYS[1] queue list  KEYS[2] delayed zset  KEYS[3] wake list
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] queue  ARGV[3] max payload bytes
-- ARGV[4] now ms ('' = Redis TIME)  ARGV[5] job name  ARGV[6] max attempts  ARGV[7] delay ms
-- ARGV[8] deadline ms in Redis time ('' = none): a call that reaches Redis later stores nothing
-- ARGV[9] replay guard ms  ARGV[10] priority level (-10..10; 0: the queue list)
-- ARGV[11] rate group ('' = none: the queue or level list; else the group's list
--   <base>:g:<group>, and the group joins <base>:ring; see claim.lua)
-- ARGV[12..] two per job: id, payload JSON
-- Returns the number of jobs stored, or -1 when the call came after its deadline (its caller
-- has given up; a late copy must not store a job that may already have run and ended).
-- Replaying the whole call changes nothing and returns 0:
-- * jobs to run now are pushed to the queue list (or their level's list, named in
--   <base>:levels; see claim.lua) as inline records (no key per job), and
--   the call leaves a marker <base>:dd:<its first job id> for the replay guard; a call that
--   finds its marker pushes nothing;
-- * delayed jobs get a hash each (with its level as field o, when not 0, and its group as
--   field g); a job whose key
--   already exists is left alone (a replayed call, or the marker of a job already done).
-- Every id, the name and every payload are checked before anything is written, so a bad or
-- oversized one stores nothing. Keys are built here from the queue's base, so they share its
-- hash tag (one slot).
local ready_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base, queue, max_payload = ARGV[1], ARGV[2], tonumber(ARGV[3])
local name, max_attempts, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])
local guard, level, group = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]

if not string.find(name, '^[%a_][%w_%.:<>%-]*$') or string.len(name) > 200 then
  return redis.error_reply('ERR invalid job name')
end
if not string.find(max_attempts, '^%d+$') then return redis.error_reply('ERR invalid max attempts') end
if not level or level ~= math.floor(level) or level < -10 or level > 10 then
  return redis.error_reply('ERR invalid priority')
end
if group ~= '' and not valid_group(group) then return redis.error_reply('ERR invalid rate group') end
if group ~= '' and level ~= 0 then return redis.error_reply('ERR a job has a priority or a rate group, not both') end
for a = 12, #ARGV, 2 do
  if string.len(ARGV[a + 1]) > max_payload then
    return redis.error_reply('ERR payload too large: ' .. string.len(ARGV[a + 1]) .. ' bytes')
  end
  if string.len(ARGV[a]) > 64 or not string.find(ARGV[a], '^[%w_%-]+$') then
    return redis.error_reply('ERR invalid job id')
  end
end
if #ARGV < 12 then return 0 end

local now = now_ms(ARGV[4])
local deadline = tonumber(ARGV[8])
if deadline and now > deadline then return -1 end

if delay <= 0 then
  local marker = dispatch_marker(base, ARGV[12])
  if redis.call('EXISTS', marker) == 1 then return 0 end
  if level ~= 0 then
    ready_key = ready_key .. ':p' .. level
    redis.call('ZADD', base .. ':levels', level, level)
  elseif group ~= '' then
    ready_key = usable_group_list(base, group)
  end
  local records, len = {}, 0
  for a = 12, #ARGV, 2 do
    records[#records + 1] = inline_record(ARGV[a], name, max_attempts, now, ARGV[a + 1])
    if #records == 1000 then  -- unpack() has a limit: push in slices
      len = redis.call('RPUSH', ready_key, unpack(records))
      records = {}
    end
  end
  if #records > 0 then len = redis.call('RPUSH', ready_key, unpack(records)) end
  if group ~= '' then group_ready(base, group, len, (#ARGV - 11) / 2) end
  redis.call('SET', marker, 1, 'PX', guard)
  wake(wake_key)
  return (#ARGV - 11) / 2
end

local due = now + delay
local stored = 0
for a = 12, #ARGV, 2 do
  local id = ARGV[a]
  local key = job_key(base, id)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'n', name, 'q', queue, 'p', ARGV[a + 1], 'm', max_attempts,
      's', 'delayed', 'c', now, 'd', due, 'v', FORMAT_VERSION)
    if level ~= 0 then redis.call('HSET', key, 'o', level) end
    if group ~= '' then redis.call('HSET', key, 'g', group) end
    redis.call('ZADD', delayed_key, due, id)
    stored = stored + 1
  end
end
-- Wake an idle worker so it re-plans around a new earliest delayed job (every job of this
-- call has the same due time).
if stored > 0 and tonumber(redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')[2]) == due then
  wake(wake_key)
end
return stored
