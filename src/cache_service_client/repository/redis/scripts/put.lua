-- The put script (cache_service_client.repository.redis.lua.PUT).
-- ARGV[3]: ttl_ms (0: none); ARGV[4]: "0" to write, "1" to write a device only if it is newer,
-- "2" the same on a retried attempt, each with a "c" in front to check only (see below); then
-- (id, value, datatype, score) per device in KEYS[7..] (each id once).
-- "Newer": no value is stored, or the stored one is indexed with an older last_updated (the
-- index keeps milliseconds: score = ms * 2 + persist); a value nobody indexed counts as older.
-- A stored value identical to the update (same bytes) is not written again either; on a retried
-- attempt ("2") it counts as written: it is what the attempt whose reply was lost wrote.
-- A put with a TTL also removes up to {prune} expired index entries of the bucket.
-- Returns how many devices were written (with "2", or found stored already).
-- "c...": the check pass of a batch over several buckets (each its own script call, on its own
-- Redis Cluster node perhaps): the reads below, the ACL's word on each command the put would
-- run (Redis 7+), and a write that changes nothing where the put's first write would be refused
-- (maxmemory, too few replicas, a failed save) fail as the put would; nothing is written, and it
-- returns 0.
local call, argv, keys = redis.call, ARGV, KEYS
local ttl = tonumber(argv[3])
local check = string.sub(argv[4], 1, 1) == 'c'
local mode = string.sub(argv[4], -1)
local newer, retried = mode ~= '0', mode == '2'
local now, at = nil, 0
if ttl > 0 then
  now = now_ms()
  at = now + ttl
end
local n = #keys - 6
-- Reads: what each write will change. The entries a device has tell which writes are needed
-- (an unchanged entry is not written again), and reading them checks each index's type.
local fresh_bucket = unversioned()
local ids = {}
for i = 1, n do ids[i] = argv[4 * i + 1] end
local in_ids, parts, stored = scores(keys[1], ids), scores(keys[4], ids), scores(keys[5], ids)
local batch = {}
if now then for i = 1, n do batch[ids[i]] = true end end
-- Per device (by position): whether it is written, its datatype number and the number it had
-- (false: none); and how many were found stored already by an earlier attempt (with "2").
local write, number_of_device, old_of_device, found = {}, {}, {}, 0
local numbers = new_numbers()
for i = 1, n do
  local id, dt = ids[i], argv[4 * i + 3]
  local number = number_of(numbers, dt)
  local part = parts[i]
  local old = false
  if part then old = math.floor(tonumber(part) / 2) end
  will_change('ZADD', time_key(number), id)
  if old and old ~= number then will_change('ZREM', time_key(old), id) end
  local verdict = newer and not_newer(keys[6 + i], stored[i], argv[4 * i + 4], argv[4 * i + 2])
  write[i] = not verdict
  if verdict == 'same' and retried then found = found + 1 end
  number_of_device[i], old_of_device[i] = number, old
end
local expired = {}
if now then
  expired = expired_entries(now, {prune}, batch)
else
  call('ZSCORE', keys[2], '')
end
-- Writes: the values first, then their index entries, then the expired entries. A check
-- pass writes nothing: a command that changes nothing (no member is '') stands for the first
-- write, refused as that would be (a ZADD, under maxmemory too, where a value is written; a
-- ZREM where only expired entries go).
if check then
  local writing, moving = false, false
  for i = 1, n do
    if write[i] then
      writing = true
      may('SET', keys[6 + i], '')
      if old_of_device[i] and old_of_device[i] ~= number_of_device[i] then moving = true end
    end
  end
  if writing then
    may('ZADD', keys[1], '0', '')
    if next(numbers.fresh) then may('HSET', keys[3], '', '') end
    if fresh_bucket then may('SET', keys[6], LAYOUT) end
  end
  -- ZREM: an entry that moves to another datatype's time index, expired entries, and (without
  -- a TTL) each written device's entry in the expiry index.
  if moving or #expired > 0 or (writing and not now) then may('ZREM', keys[2], '') end
  if writing then
    first_write('ZADD', keys[1], 'XX', '0', '')
  elseif #expired > 0 then
    first_write('ZREM', keys[1], '')
  end
  return 0
end
local written = 0
local at_text = score_text(at)
for i = 1, n do
  if write[i] then
    set_value(keys[6 + i], argv[4 * i + 2], at, at_text)
    written = written + 1
  end
end
if written > 0 then
  if fresh_bucket then call('SET', keys[6], LAYOUT) end
  save_numbers(numbers)
end
local writes = new_writes(n)
for i = 1, n do
  if write[i] then
    add_entries(writes, ids[i], number_of_device[i], old_of_device[i], argv[4 * i + 4],
      in_ids[i], parts[i], stored[i], at)
  end
end
remove_entries(writes, expired)
send(writes)
return written + found
