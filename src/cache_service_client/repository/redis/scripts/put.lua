-- The put script (cache_service_client.repository.redis.lua.PUT).
-- ARGV[3]: ttl_ms (0: none); ARGV[4]: "1" to write a device only if it is newer; then
-- (id, value, datatype, score) per device in KEYS[7..] (each id once).
-- "Newer": no value is stored, or the stored one is indexed with an older last_updated (the
-- index keeps milliseconds: score = ms * 2 + persist); a value nobody indexed counts as older.
-- A put with a TTL also removes up to {prune} expired index entries of the bucket.
-- Returns how many devices were written.
local ttl = tonumber(ARGV[3])
local newer = ARGV[4] == '1'
local now, at = nil, 0
if ttl > 0 then
  now = now_ms()
  at = now + ttl
end
local n = #KEYS - 6
-- Reads: what each write will change. The entries a device has tell which writes are needed
-- (an unchanged entry is not written again), and reading them checks each index's type.
local fresh_bucket = unversioned()
local ids = {}
for i = 1, n do ids[i] = ARGV[4 * i + 1] end
local in_ids, parts, stored = scores(KEYS[1], ids), scores(KEYS[4], ids), scores(KEYS[5], ids)
local plan, batch, numbers = {}, {}, new_numbers()
for i = 1, n do
  local base = 4 * i + 1
  local id, key, dt, score = ids[i], KEYS[6 + i], ARGV[base + 2], tonumber(ARGV[base + 3])
  batch[id] = true
  local number = number_of(numbers, dt)
  local persist = score % 2
  local part, at_time = parts[i], stored[i]
  local old = false
  if part then old = math.floor(tonumber(part) / 2) end
  will_change('ZADD', time_key(number), id)
  if old and old ~= number then will_change('ZREM', time_key(old), id) end
  local write = true
  if newer and at_time and redis.call('EXISTS', key) == 1
      and math.floor(tonumber(at_time) / 2) >= math.floor(score / 2) then
    write = false
  end
  plan[i] = {
    write = write, id = id, number = number, old = old, score = score,
    ids = tonumber(in_ids[i]) ~= persist,
    part = tonumber(part) ~= number * 2 + persist,
    time = old ~= number or tonumber(at_time) ~= score,
  }
end
local expired = {}
if now then
  expired = expired_entries(now, {prune}, batch)
else
  redis.call('ZSCORE', KEYS[2], '')
end
-- Writes: the values first, then their index entries, then the expired entries.
local written = 0
for i = 1, n do
  if plan[i].write then
    local base = 4 * i + 1
    if at > 0 then
      redis.call('SET', KEYS[6 + i], ARGV[base + 1], 'PXAT', at)
    else
      redis.call('SET', KEYS[6 + i], ARGV[base + 1])
    end
    written = written + 1
  end
end
if written > 0 then
  if fresh_bucket then redis.call('SET', KEYS[6], LAYOUT) end
  save_numbers(numbers)
end
local writes = new_writes(n)
for i = 1, n do
  if plan[i].write then add_entries(writes, plan[i], at) end
end
remove_entries(writes, expired)
send(writes)
return written
