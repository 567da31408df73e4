-- requeue_failed: give failed jobs a fresh set of attempts (the "failed retry" command).
-- KEYS[1] failed zset  KEYS[2] queue list  KEYS[3] wake list
-- ARGV[1] queue key base  ARGV[2] now ms ('' = TIME)  ARGV[3] max jobs when no ids are given
-- ARGV[4] call id, unique per call ('' = none)  ARGV[5..] ids to requeue; none means the
-- oldest ARGV[3] failed jobs
-- Returns {number requeued, number skipped (not failed here, not runnable, or of a newer format,
--          or unique with its key held, or waiting on a prerequisite that is still failed),
--          {id, id of the live job holding its unique key, ...},
--          {id, id of the failed (or gone) prerequisite it would wait for, ...},
--          number of jobs brought back down the flows of those requeued, not asked for}
-- An asked-for id already brought back by this call (down the flow of another) counts as
-- requeued.
-- A unique job takes its key's lock again; while another live job holds it, it is skipped.
-- A requeued job keeps x = "requeue <call id>": a replay of this call (redis-py resends a
-- call whose reply was lost) finds it no longer failed, changes nothing, and counts it again.
-- Flows (see the prelude): a job with prerequisites still to succeed goes back to waiting
-- rather than to its queue. Requeueing a job revives the jobs its failure failed (W = it):
-- each waits again (or starts, its prerequisites all done), and so on down the flow, unless
-- another of its prerequisites is still failed. A batch member requeued while its batch is
-- open is counted again (its failure is taken back, and an on_success callback it failed
-- waits again); once the batch has closed, the member runs on its own. A batch's callback
-- requeued while its batch is open waits for it again; an on_success one whose batch has a
-- failed member is skipped (blocked by that member).
local F = flows()
local batch_key, counted, dependents_key = F.batch_key, F.counted, F.dependents_key
local failed_key, ready_key, wake_key = KEYS[1], KEYS[2], KEYS[3]
local base = ARGV[1]
local now = now_ms(ARGV[2])
local replay_mark = ARGV[4] ~= '' and 'requeue ' .. ARGV[4]
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', failed_key, 0, tonumber(ARGV[3]) - 1) end
local requeued, skipped, held, blocked = 0, 0, {}, {}

-- The live job other than `id` that holds the unique key of the job at `key`, if any.
local function key_holder(key, id)
  local suffix = hash_field(key, 'u')
  if not suffix then return false end
  local holder = redis.call('GET', unique_lock(base, suffix))
  if holder and holder ~= id and is_live(job_key(base, holder)) then return holder end
  return false
end

-- The batch hash of the job at `key` when it is a batch's callback (B, and no F letter 'b')
-- and that batch is still on record, else false.
local function callback_batch(key)
  local f = redis.call('HMGET', key, 'B', 'F')
  if not f[1] or string.find(f[2] or '', 'b', 1, true) then return false end
  local bkey = batch_key(base, f[1])
  return redis.call('EXISTS', bkey) == 1 and bkey
end

-- A prerequisite of the job at `key` (or the batch member that failed it, W; or, for an
-- on_success callback, a member still failed) that is still failed, if any; or one that is
-- gone (its failed record forgotten or expired) when the job still counts more
-- prerequisites to succeed (D) than are live: it would wait for ever.
local function failed_prerequisite(key)
  local f = redis.call('HMGET', key, 'P', 'W')
  local listed = ' ' .. (f[1] or '') .. ' '
  for p in string.gmatch((f[1] or '') .. ' ' .. (f[2] or ''), '%S+') do
    local prerequisite = job_key(base, p)
    if hash_field(prerequisite, 's') == 'failed' then return p end
    -- Gone (no record, no kept result) and never counted as ended: it will never end.
    if string.find(listed, ' ' .. p .. ' ', 1, true) and key_type(prerequisite) == 'none'
        and redis.call('EXISTS', base .. ':r:' .. p) == 0 and not counted(key, p) then
      return p
    end
  end
  local bkey = callback_batch(key)
  if bkey and redis.call('HGET', bkey, 'mode') == 's' and tonumber(redis.call('HGET', bkey, 'ko')) > 0 then
    return redis.call('LINDEX', bkey .. ':ko', 0) or ('batch:' .. redis.call('HGET', key, 'B'))
  end
  return false
end

-- The dependent at `key` waits for prerequisite `p`'s end again (a retry of it).
local function uncount(key, p)
  local already, ended = counted(key, p)
  if not already then return end
  local kept = {}
  for q in string.gmatch(ended, '%S+') do
    if q ~= p then kept[#kept + 1] = q end
  end
  redis.call('HSET', key, 'E', table.concat(kept, ' '))
  redis.call('HINCRBY', key, 'D', 1)
end

-- D, recounted: the prerequisites in P whose end it has not counted (E).
local function recount(key)
  local pending = 0
  for p in string.gmatch(hash_field(key, 'P') or '', '%S+') do
    if not counted(key, p) then pending = pending + 1 end
  end
  redis.call('HSET', key, 'D', pending)
  return pending
end

-- Out of the failed set, and waiting (prerequisites left: D, or the callback of a batch
-- still open), or ready.
local revived = {}  -- id -> true: brought back by this call (asked for, or down a flow)
local function restart(id, key)
  revived[id] = true
  if replay_mark then redis.call('HSET', key, 'x', replay_mark) end
  redis.call('ZREM', failed_key, id)
  redis.call('HDEL', key, 'W')
  redis.call('PERSIST', key)
  local bkey = callback_batch(key)
  local open = bkey and (tonumber(redis.call('HGET', bkey, 'left') or '') or 0) > 0
  if (hash_field(key, 'P') and recount(key) > 0) or open then
    redis.call('HSET', key, 's', 'waiting')
    redis.call('ZADD', base .. ':waiting', tonumber(hash_field(key, 'c') or '') or now, id)
  else
    redis.call('HSET', key, 's', 'ready', 'd', now)
    push_ready(base, id, false)
  end
end

-- Batch member `id` requeued: an open batch takes its failure back. (A callback, B without
-- F letter 'b', keeps its batch as it is.)
local function reopen_batch(id, key)
  if not string.find(hash_field(key, 'F') or '', 'b', 1, true) then return end  -- not a member
  local bid = hash_field(key, 'B')
  local bkey = bid and batch_key(base, bid)
  local b = bkey and redis.call('HMGET', bkey, 'left', 'cb')
  if not b or not b[1] then return end
  local cb = b[2] ~= '' and job_key(base, b[2])
  local cb_failed_by_member = cb and hash_field(cb, 's') == 'failed' and hash_field(cb, 'W')
  if tonumber(b[1]) <= 0 and not cb_failed_by_member then
    -- Closed: its callback was released (or it has none). This run is not counted.
    redis.call('HDEL', key, 'B')
    redis.call('HSET', key, 'F', (string.gsub(hash_field(key, 'F') or '', 'b', '')))
    return
  end
  redis.call('LREM', bkey .. ':ko', 1, id)
  local ko = redis.call('HINCRBY', bkey, 'ko', -1)
  redis.call('HINCRBY', bkey, 'left', 1)
  for _, k in ipairs({bkey, bkey .. ':ok', bkey .. ':ko'}) do redis.call('PERSIST', k) end
  if cb_failed_by_member and ko <= 0 then
    redis.call('ZREM', failed_key, b[2])
    redis.call('HDEL', cb, 'W')
    redis.call('PERSIST', cb)
    redis.call('HSET', cb, 's', 'waiting')
    revived[b[2]] = true
    if replay_mark then redis.call('HSET', cb, 'x', replay_mark) end
    redis.call('ZADD', base .. ':waiting', now, b[2])
  end
end

-- The jobs whose failure came from `id` (W = id, in its edge set) restart, and theirs after
-- them, unless another prerequisite of theirs is still failed (W then names that one). A job
-- that runs anyway (M 'r') and has not started counted the failure as an end: it waits for
-- this one's end again (taken out of its E).
local function revive_dependents(id)
  local todo, i = {id}, 1
  while todo[i] do
    local edges = dependents_key(base, todo[i])
    if redis.call('EXISTS', edges) == 1 then
      redis.call('PERSIST', edges)
      for _, dep in ipairs(redis.call('SMEMBERS', edges)) do
        local key = job_key(base, dep)
        local s = hash_field(key, 's')  -- a done job's record may be a string by now
        if (s == 'waiting' or s == 'failed') and hash_field(key, 'M') == 'r' then uncount(key, todo[i]) end
        if s == 'failed' and hash_field(key, 'W') == todo[i]
            and record_version(hash_field(key, 'v')) <= FORMAT_VERSION then
          local other = failed_prerequisite(key)
          if other then
            redis.call('HSET', key, 'W', other)
          else
            restart(dep, key)
            todo[#todo + 1] = dep
          end
        end
      end
    end
    i = i + 1
  end
end

-- Requeue one asked-for id: 'requeued', or 'held' / 'blocked' with who holds it, or 'skipped'.
local function requeue(id)
  local key = job_key(base, id)
  local runnable = redis.call('ZSCORE', failed_key, id) and hash_field(key, 'n') and hash_field(key, 'p')
    and record_version(hash_field(key, 'v')) <= FORMAT_VERSION
  if not runnable then
    -- Brought back by this call already (down the flow of another id), or by an earlier
    -- copy of it (a replay).
    if revived[id] or (replay_mark and hash_field(key, 'x') == replay_mark) then return 'requeued' end
    return 'skipped'
  end
  local holder = key_holder(key, id)
  if holder then return 'held', holder end
  local waits_on = failed_prerequisite(key)
  if waits_on then return 'blocked', waits_on end
  local suffix = hash_field(key, 'u')
  if suffix then redis.call('SET', unique_lock(base, suffix), id) end
  redis.call('HSET', key, 'a', 0, 'l', 0)
  redis.call('HDEL', key, 'h')  -- and a fresh allowance of throttles (RateLimited)
  restart(id, key)
  reopen_batch(id, key)
  revive_dependents(id)
  return 'requeued'
end

-- Ids blocked by a prerequisite are tried again after the others: the prerequisite may be
-- among the ids of this call (then they were revived down its flow).
local later = {}
for pass = 1, 2 do
  for _, id in ipairs(pass == 1 and ids or later) do
    local outcome, who = requeue(id)
    if outcome == 'requeued' then
      requeued = requeued + 1
    elseif outcome == 'blocked' and pass == 1 then
      later[#later + 1] = id
    elseif outcome == 'held' then
      held[#held + 1] = id; held[#held + 1] = who
      skipped = skipped + 1
    elseif outcome == 'blocked' then
      blocked[#blocked + 1] = id; blocked[#blocked + 1] = who
      skipped = skipped + 1
    else
      skipped = skipped + 1
    end
  end
end
local brought_back = 0
for _ in pairs(revived) do brought_back = brought_back + 1 end
if brought_back > 0 then wake(wake_key) end
return {requeued, skipped, held, blocked, math.max(brought_back - requeued, 0)}
