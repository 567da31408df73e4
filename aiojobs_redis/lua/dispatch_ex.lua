-- dispatch_ex: store jobs with options (a unique key) of one queue and one kind, each as a
-- hash whose id is pushed to the queue list (or added to the delayed zset). Plain jobs use
-- dispatch.lua.
-- KEYS[1] queue list  KEYS[2] delayed zset  KEYS[3] wake list (all under ARGV[1])
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] queue  ARGV[3] max payload bytes
-- ARGV[4] now ms ('' = Redis TIME)  ARGV[5] job name  ARGV[6] max attempts  ARGV[7] delay ms
-- ARGV[8] deadline ms in Redis time ('' = none): a call that reaches Redis later stores nothing
-- ARGV[9] priority level (-10..10; 0: the queue list)  ARGV[10] rate group ('' = none; else
--   kept as field g, and the job waits in its group's list: see claim.lua)
-- ARGV[11..] five per job: id, payload JSON, unique lock suffix ("<name>:<key>"),
--   flags ('u': held until the job ends; 's': until it starts), on duplicate ('keep',
--   'error' or 'replace')
-- Returns -1 when the call came after its deadline, else two entries per job: an id and
-- what happened:
--   'stored'     the job was stored under its own id (or was by an earlier copy of this call)
--   'duplicate'  nothing stored: the id is the live job that holds the key
--   'replaced'   the live job (the id), not yet started, now has this payload and due time
--                (it keeps its place, and so its priority level)
--   'pending'    the live job (the id) is running; this payload is its one pending
--                successor, stored when it ends (a newer 'replace' overwrites it), at
--                this call's priority level (field o of the successor hash)
-- Replaying the whole call changes nothing and answers alike: a job whose lock already names
-- it, or whose key exists (its record, or the "done" marker ack leaves), is not stored again.
-- A lock whose holder is no longer live (a record deleted by hand) is taken over.
-- Everything is checked before anything is written.
local ready_key, delayed_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base, queue, max_payload = ARGV[1], ARGV[2], tonumber(ARGV[3])
local name, max_attempts, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])
local MODES = {keep = true, error = true, replace = true}

if not string.find(name, '^[%a_][%w_%.:<>%-]*$') or string.len(name) > 200 then
  return redis.error_reply('ERR invalid job name')
end
if not string.find(max_attempts, '^%d+$') then return redis.error_reply('ERR invalid max attempts') end
if not delay then return redis.error_reply('ERR invalid delay') end
local level = tonumber(ARGV[9])
if not level or level ~= math.floor(level) or level < -10 or level > 10 then
  return redis.error_reply('ERR invalid priority')
end
local group = ARGV[10] ~= '' and ARGV[10]
if group and not valid_group(group) then return redis.error_reply('ERR invalid rate group') end
if group and level ~= 0 then return redis.error_reply('ERR a job has a priority or a rate group, not both') end
for a = 11, #ARGV, 5 do
  if string.len(ARGV[a + 1]) > max_payload then
    return redis.error_reply('ERR payload too large: ' .. string.len(ARGV[a + 1]) .. ' bytes')
  end
  if string.len(ARGV[a]) > 64 or not string.find(ARGV[a], '^[%w_%-]+$') then
    return redis.error_reply('ERR invalid job id')
  end
  local suffix = ARGV[a + 2]
  if suffix == '' or string.len(suffix) > 400 then return redis.error_reply('ERR invalid unique key') end
  if not string.find(ARGV[a + 3], '^[us]$') or not MODES[ARGV[a + 4]] then
    return redis.error_reply('ERR invalid unique options')
  end
end

local now = now_ms(ARGV[4])
local deadline = tonumber(ARGV[8])
if deadline and now > deadline then return -1 end

local due = now + math.max(delay, 0)
local out = {}
local woke = false
for a = 11, #ARGV, 5 do
  local id, payload, suffix, flags, mode = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local holder = redis.call('GET', unique_lock(base, suffix))
  local holder_key = holder and job_key(base, holder)
  local state = holder_key and hash_field(holder_key, 's')
  if holder == id or redis.call('EXISTS', job_key(base, id)) == 1 then
    out[#out + 1] = id; out[#out + 1] = 'stored'  -- an earlier copy of this call stored it
  elseif state ~= 'ready' and state ~= 'delayed' and state ~= 'running' then
    store_job(base, queue, id, name, max_attempts, payload, now, due, flags, suffix, level, group)
    woke = woke or due <= now
    out[#out + 1] = id; out[#out + 1] = 'stored'
  elseif mode ~= 'replace' then
    out[#out + 1] = holder; out[#out + 1] = 'duplicate'
  elseif state == 'running' then
    redis.call('HSET', successor_key(base, suffix), 'i', id, 'p', payload, 'n', name,
      'm', max_attempts, 'q', queue, 'y', math.max(delay, 0), 'F', flags, 'o', level)
    if group then redis.call('HSET', successor_key(base, suffix), 'g', group) end
    out[#out + 1] = holder; out[#out + 1] = 'pending'
  else
    -- Not started: the newest payload and due time win (repeated dispatches debounce).
    redis.call('HSET', holder_key, 'p', payload)
    if state == 'delayed' then
      redis.call('HSET', holder_key, 'd', due)
      redis.call('ZADD', delayed_key, 'XX', due, holder)
      woke = woke or redis.call('ZRANGE', delayed_key, 0, 0)[1] == holder  -- re-plan the wait
    end
    out[#out + 1] = holder; out[#out + 1] = 'replaced'
  end
end
if woke then wake(wake_key) end
return out
