-- The put script (cache_service_client.repository.redis.lua.PUT).
-- ARGV[3]: ttl_ms (0: none); ARGV[4]: "1" to write a device only if it is newer; then
-- (id, value, datatype, score) per device in KEYS[4..] (each id once).
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
local n = #KEYS - 3
-- Reads: what each write will change.
check_fixed_keys()
local plan, batch = {}, {}
for i = 1, n do
  local base = 4 * i + 1
  local id, key, dt, score = ARGV[base], KEYS[3 + i], ARGV[base + 2], ARGV[base + 3]
  batch[id] = true
  local target = ARGV[2] .. dt
  may('ZSCORE', target, id)
  local here = redis.call('ZSCORE', target, id)
  local old_key, old_dt, old_score = false, false, here
  if not here and redis.call('ZSCORE', KEYS[1], id) then
    local k, d, sc = shard_of(id)
    if k then
      may('ZREM', k, id)
      old_key, old_dt, old_score = k, d, sc
    end
  end
  local write = true
  if newer and old_score and redis.call('EXISTS', key) == 1
      and math.floor(tonumber(old_score) / 2) >= math.floor(tonumber(score) / 2) then
    write = false
  end
  if write then may('ZADD', target, '0', id) end
  plan[i] = {write, target, here, old_key, old_dt}
end
local expired = {}
if now then expired = expired_entries(now, {prune}, batch) end
-- Writes: the values first, then their index entries, then the expired entries.
local written = 0
for i = 1, n do
  if plan[i][1] then
    local base = 4 * i + 1
    if at > 0 then
      redis.call('SET', KEYS[3 + i], ARGV[base + 1], 'PXAT', at)
    else
      redis.call('SET', KEYS[3 + i], ARGV[base + 1])
    end
    written = written + 1
  end
end
for i = 1, n do
  local write, target, here, old_key, old_dt = unpack(plan[i])
  if write then
    local base = 4 * i + 1
    local id = ARGV[base]
    if old_key then drop_from(old_key, old_dt, id) end
    if not here then redis.call('SADD', KEYS[3], ARGV[base + 2]) end
    add_entries(id, target, ARGV[base + 3], at)
  end
end
remove_entries(expired)
return written
