-- ack: jobs succeeded; end each one whose lease this worker still holds.
-- KEYS[1] running zset
-- ARGV[1] queue key base (jobs:{q})  ARGV[2] keep finished records ms (0: delete)
-- ARGV[3] replay guard ms  ARGV[4] now ms ('' = Redis TIME)  ARGV[5..] two per job: id, token
-- then, for jobs that keep their result (keep_result), an empty string and four per job:
-- id, token, keep ms, result JSON (kept at <base>:r:<id>: see keep_result in the prelude).
-- Returns one flag per job: 1 acknowledged (now, or already by this token: a replay), 0 the
-- lease is no longer held. After deletion a small "done <token>" marker stays at the job key
-- until created + guard, so that a dispatch replayed by the client cannot store the job again.
local running_key, base = KEYS[1], ARGV[1]
local keep, guard = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms(ARGV[4])
local acked = {}
local a, stride = 5, 2
while a <= #ARGV do
  if ARGV[a] == '' then a, stride = a + 1, 4 end
  local id, token = ARGV[a], ARGV[a + 1]
  local key = job_key(base, id)
  if hash_field(key, 't') ~= token then
    acked[#acked + 1] = settled_by(key, 'ack', token) and 1 or 0
  else
    redis.call('ZREM', running_key, id)
    if keep > 0 then
      local f = redis.call('HMGET', key, 'F', 'u', 'g')
      group_left(base, f[3])
      redis.call('HSET', key, 's', 'done', 'f', now, 'x', 'ack ' .. token)
      redis.call('HDEL', key, 't', 'w')
      redis.call('PEXPIRE', key, keep)
      finish(base, id, 'done', now, f[1], f[2])
    else
      local f = redis.call('HMGET', key, 'c', 'F', 'u', 'g')
      group_left(base, f[4])
      local created = tonumber(f[1]) or 0
      finish(base, id, 'done', now, f[2], f[3])  -- before DEL: a flow's job reads its hash
      redis.call('DEL', key)
      local left = created + guard - now
      if left > 0 then redis.call('SET', key, 'done ' .. token, 'PX', left) end
    end
    if stride == 4 then keep_result(base, id, tonumber(ARGV[a + 2]), ARGV[a + 3]) end
    acked[#acked + 1] = 1
  end
  a = a + stride
end
return acked
