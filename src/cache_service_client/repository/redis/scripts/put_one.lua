-- The put script for one device (cache_service_client.repository.redis.lua.PUT_ONE): what PUT
-- does for a run of one device, without the tables a batch needs (for one device they cost
-- about as much as its commands), and with one read less: the device's entry in the time index
-- of its datatype is the script's first write, so that index needs no check (see first_write).
-- ARGV[3]: ttl_ms (0: none); ARGV[4]: "1" to write the device only if it is newer, "2" the same
-- on a retried attempt (see PUT); ARGV[5..8]: its id, value, datatype and score; KEYS[7]: its key.
-- Returns 1 if the device was written (or, on a retried attempt, found stored already), else 0.
local call, argv, keys = redis.call, ARGV, KEYS
local id, dt, score = argv[5], argv[7], argv[8]
-- Reads: what the write will change (and, by reading them, each index's type).
local fresh_bucket = unversioned()
local in_ids, part, stored = call('ZSCORE', keys[1], id), call('ZSCORE', keys[4], id),
  call('ZSCORE', keys[5], id)
local number = stored_number(dt)
local fresh = not number
if fresh then number = call('HLEN', keys[3]) + 1 end
local old = false
if part then old = math.floor(tonumber(part) / 2) end
if old and old ~= number then check_change('ZREM', time_key(old), id) end
local verdict = argv[4] ~= '0' and not_newer(keys[7], stored, score, argv[6])
local write = not verdict
local ttl, at, expired = tonumber(argv[3]), 0, nil
if ttl > 0 then
  local now = now_ms()
  at = now + ttl
  expired = expired_entries(now, {prune}, {[id] = true})
else
  call('ZSCORE', keys[2], '')
end
-- Writes: the index entries (the first unchecked), then the value, then the expired entries.
local writes = new_writes(1)
if write then
  add_entries(writes, id, number, old, score, in_ids, part, stored, at)
  set_value(keys[7], argv[6], at, score_text(at))
  if fresh_bucket then call('SET', keys[6], LAYOUT) end
  if fresh then call('HSET', keys[3], dt, number) end
end
if expired then remove_entries(writes, expired) end
if write or (verdict == 'same' and argv[4] == '2') then return 1 end
return 0
