-- progress: record how far a running job has got, if this run still holds its lease.
-- KEYS[1] job hash
-- ARGV[1] token  ARGV[2] progress JSON
-- Returns 1 when recorded, 0 when the lease is no longer held (a stale run: nothing changes,
-- so it cannot overwrite the progress of the run that replaced it). Safe to run twice.
local key, token = KEYS[1], ARGV[1]
if hash_field(key, 't') ~= token then return 0 end
redis.call('HSET', key, 'G', ARGV[2])
return 1
