-- The delete script (cache_service_client.repository.redis.lua.DELETE).
-- ARGV[3..]: the ids of the device keys in KEYS[4..] (each id once). Returns how many existed.
-- Reads: the updated index holding each id.
check_fixed_keys()
local n = #KEYS - 3
local shards = {}
for i = 1, n do
  local id = ARGV[2 + i]
  local key, dt = shard_of(id)
  if key then may('ZREM', key, id) else key = false end
  shards[i] = {key, dt}
end
-- Writes.
local deleted = 0
for i = 1, n do
  local id = ARGV[2 + i]
  deleted = deleted + redis.call('DEL', KEYS[3 + i])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if shards[i][1] then drop_from(shards[i][1], shards[i][2], id) end
end
return deleted
