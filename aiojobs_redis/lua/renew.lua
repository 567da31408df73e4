-- renew: extend the leases a worker still holds.
-- KEYS[1] running zset
-- ARGV[1] queue key base  ARGV[2] lease ms  ARGV[3] now ms ('' = TIME)  ARGV[4..] id, token pairs
-- Returns the ids whose lease this worker no longer holds (token changed or job gone).
local running_key, base, lease = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if hash_field(job_key(base, id), 't') == token and redis.call('ZSCORE', running_key, id) then
    redis.call('ZADD', running_key, 'XX', now + lease, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
