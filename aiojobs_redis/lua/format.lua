-- format: record under the prefix the data format version these scripts write; never lower it.
-- KEYS[1] the prefix's format key
-- Returns the version stored after the call (FORMAT_VERSION, or the newer one found there),
-- or -1 when the key holds anything else than a version number (left as it is).
local format_key = KEYS[1]
local kind = key_type(format_key)
if kind == 'none' then
  redis.call('SET', format_key, FORMAT_VERSION)
  return FORMAT_VERSION
end
if kind ~= 'string' then return -1 end
local stored = redis.call('GET', format_key)
if not string.find(stored, '^%d%d?%d?$') then return -1 end
stored = tonumber(stored)
if stored < FORMAT_VERSION then
  redis.call('SET', format_key, FORMAT_VERSION)
  return FORMAT_VERSION
end
return stored
