-- record_events: a worker's buffered job events and counts for one queue, in one call.
-- KEYS[1] the queue's event stream (jobs:{q}:events)  KEYS[2] its throughput hash (jobs:{q}:tp)
-- KEYS[3] its lifetime totals hash (jobs:{q}:totals)
-- ARGV[1] the stream's cap (XADD MAXLEN ~)  ARGV[2] ms the hash lives after this write
-- ARGV[3] B, how many bucket pairs follow  ARGV[4 .. 3+2B] bucket field, amount, ...
--   (a bucket field is "<minute>:<kind>"; the amount is added to the totals' field <kind> too)
-- ARGV[4+2B ..] events, one JSON document each (stored as the entry's `event` field)
-- Returns the number of events added. Sent by telemetry_store.py for RedisTelemetry.flush: one
-- script call per queue instead of a command per event keeps the worker's cost per job small.
-- Not safe to run twice (the counts are added), so it writes nothing unless it can write
-- everything: a user whose ACL lacks one of its commands gets a NOPERM error before any
-- write, and the worker's next flush sends the same counts once (Redis 7+; 6.2 has no
-- redis.acl_check_cmd).
local events_key, counts_key, totals_key = KEYS[1], KEYS[2], KEYS[3]
local cap, ttl_ms, buckets = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first_event = 4 + 2 * buckets
if redis.acl_check_cmd then
  local needed = {}
  if buckets > 0 then
    needed = {{'HINCRBY', counts_key, 'f', '1'}, {'HINCRBY', totals_key, 'f', '1'}, {'PEXPIRE', counts_key, '1'}}
  end
  if first_event <= #ARGV then
    table.insert(needed, {'XADD', events_key, 'MAXLEN', '~', cap, '*', 'event', '{}'})
  end
  for _, command in ipairs(needed) do
    if not redis.acl_check_cmd(unpack(command)) then
      return redis.error_reply('NOPERM this user may not run ' .. command[1] .. ' on ' .. command[2] ..
        ': no job events or counts were recorded')
    end
  end
end
for b = 4, first_event - 1, 2 do
  redis.call('HINCRBY', counts_key, ARGV[b], ARGV[b + 1])
  local kind = string.match(ARGV[b], ':(%a+)$')
  if kind then redis.call('HINCRBY', totals_key, kind, ARGV[b + 1]) end
end
if buckets > 0 then
  redis.call('PEXPIRE', counts_key, ttl_ms)
end
for e = first_event, #ARGV do
  redis.call('XADD', events_key, 'MAXLEN', '~', cap, '*', 'event', ARGV[e])
end
return #ARGV - first_event + 1
