-- The sweep script (cache_service_client.repository.redis.lua.SWEEP).
-- Remove index entries whose device is gone from one index (KEYS[7]: ids, expiry, by-type,
-- by-time or a datatype's time index), scanning it with ZSCAN from cursor ARGV[3]; from a
-- datatype's time index also the entries of devices of another datatype by now.
-- Returns {next cursor, entries removed}.
unversioned()
local key = KEYS[7]
local number = false
if string.sub(key, 1, #ARGV[2]) == ARGV[2] then number = tonumber(string.sub(key, #ARGV[2] + 1)) end
local reply = redis.call('ZSCAN', key, ARGV[3], 'COUNT', 200)
local entries = reply[2]
local removed = 0
local writes = new_writes(#entries / 2)
for i = 1, #entries, 2 do
  local id = entries[i]
  local placed_in = placed(id)
  if not alive(id) then
    removed = removed + redis.call('ZREM', key, id)
    unindex(writes, id, placed_in or false)
  elseif number and placed_in ~= number then
    removed = removed + redis.call('ZREM', key, id)
  end
end
send(writes)
return {reply[1], removed}
