-- forget_failed: delete failed jobs for good.
-- KEYS[1] failed zset
-- ARGV[1] queue key base  ARGV[2] max jobs when no ids are given
-- ARGV[3..] ids to delete; none means the oldest ARGV[2] failed jobs
-- Returns the number deleted (ids not in the failed set are left alone).
local failed_key, base = KEYS[1], ARGV[1]
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', failed_key, 0, tonumber(ARGV[2]) - 1) end
local deleted = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', failed_key, id) == 1 then
    redis.call('DEL', job_key(base, id), bad_key(base, id))
    deleted = deleted + 1
  end
end
return deleted
