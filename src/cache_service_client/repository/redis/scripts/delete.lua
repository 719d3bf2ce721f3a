-- The delete script (cache_service_client.repository.redis.lua.DELETE).
-- ARGV[3]: "c" to check only, else "0"; ARGV[4..]: the ids of the device keys in KEYS[7..]
-- (each id once). Returns how many existed.
-- "c": the check pass of a batch over several buckets (see PUT): the reads below, the ACL's word
-- on the commands the delete runs (Redis 7+) and a ZREM that changes nothing (refused with too
-- few replicas or a failed save, not under maxmemory: deletes free memory) fail as the delete
-- would; nothing is written, and it returns 0.
-- Reads: the fixed keys, and each id's datatype number, from its by-type entry. A run of one
-- device removes its entry in its datatype's time index first, unchecked (see first_write).
unversioned()
check_fixed_keys()
local check = ARGV[3] == 'c'
local n = #KEYS - 6
local ids = {}
for i = 1, n do ids[i] = ARGV[3 + i] end
local parts = scores(KEYS[4], ids)
local numbers = {}
for i = 1, n do
  local number = false
  if parts[i] then
    number = math.floor(tonumber(parts[i]) / 2)
    if n > 1 or check then will_change('ZREM', time_key(number), ids[i]) end
  end
  numbers[i] = number
end
-- Writes: a device's index entries, then its key (gathered index writes go at the end).
if check then
  for i = 1, n do may('DEL', KEYS[6 + i]) end
  may('ZREM', KEYS[1], '')
  first_write('ZREM', KEYS[1], '')
  return 0
end
local deleted = 0
local writes = new_writes(n)
for i = 1, n do
  unindex(writes, ids[i], numbers[i])
  deleted = deleted + redis.call('DEL', KEYS[6 + i])
end
send(writes)
-- A bucket left without devices is left without indexes (the datatype numbers start again).
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[3], KEYS[6]) end
return deleted
