-- queue_ctl: set or clear fields of a queue's control hash (pause, limits; see claim.lua).
-- KEYS[1] the queue's control hash (<base>:meta)  KEYS[2] wake list
-- ARGV pairs: field, value; an empty value deletes the field.
-- Returns the number of fields that changed. Every write sets a value (a replay changes
-- nothing). A change that may let jobs start (a field deleted, a limit changed) wakes an
-- idle worker, which looks at the queue again.
local meta_key, wake_key = KEYS[1], KEYS[2]
local changed, freed = 0, false
for a = 1, #ARGV, 2 do
  local field, value = ARGV[a], ARGV[a + 1]
  local before = redis.call('HGET', meta_key, field)
  if value == '' then
    if before then
      redis.call('HDEL', meta_key, field)
      changed = changed + 1
      freed = true
    end
  elseif before ~= value then
    redis.call('HSET', meta_key, field, value)
    changed = changed + 1
    if field ~= 'paused' then freed = true end
  end
end
if freed then wake(wake_key) end
return changed
