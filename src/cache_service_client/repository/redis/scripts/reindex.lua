-- The reindex script (cache_service_client.repository.redis.lua.REINDEX).
-- Make the indexes agree with values read by a repair. ARGV[3..]: (id, datatype, score, SHA-1
-- of the value read, in hex) per device in KEYS[7..]. A key that is gone by now is unindexed
-- instead; a key that holds another value by now (written after the repair read it) is left
-- alone: the write that changed it indexed it, and what the repair read is stale.
-- Returns how many devices needed a change.
local fresh_bucket = unversioned()
check_fixed_keys()
local n = #KEYS - 6
local now = now_ms()
local numbers, plan = new_numbers(), {}
-- Reads.
for i = 1, n do
  local base = 4 * i - 1
  local id, dt, score_arg, digest = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local score = tonumber(score_arg)
  local key = KEYS[6 + i]
  local old, old_persist = placed(id)
  -- pcall: a key of another type by now is not the value read either.
  local value = redis.pcall('GET', key)
  if value and (type(value) ~= 'string' or redis.sha1hex(value) ~= digest) then
    plan[i] = {stale = true}
  elseif value then
    local pttl = redis.call('PTTL', key)
    local at = 0
    if pttl > 0 then at = now + pttl end
    local number = number_of(numbers, dt)
    local persist = score % 2
    local target = time_key(number)
    will_change('ZADD', target, id)
    if old and old ~= number then will_change('ZREM', time_key(old), id) end
    local old_at = redis.call('ZSCORE', KEYS[2], id)
    local expiry_ok = (at == 0 and not old_at) or (at > 0 and old_at and
      math.abs(tonumber(old_at) - at) <= 1000)
    local same = old == number and old_persist == persist and expiry_ok
      and tonumber(redis.call('ZSCORE', KEYS[1], id)) == persist
      and tonumber(redis.call('ZSCORE', KEYS[5], id)) == score
      and tonumber(redis.call('ZSCORE', target, id)) == score
    plan[i] = {write = not same, at = at, id = id, number = number, old = old or false,
      score = score_arg}
  else
    if old then will_change('ZREM', time_key(old), id) end
    plan[i] = {gone = true, id = id, old = old or false}
  end
end
-- Writes.
local changed = 0
local writes = new_writes(n)
for i = 1, n do
  local p = plan[i]
  if p.stale then
    -- Left alone (see above).
  elseif p.gone then
    unindex(writes, p.id, p.old)
  elseif p.write then
    if fresh_bucket then
      redis.call('SET', KEYS[6], LAYOUT)
      fresh_bucket = false
    end
    -- Every entry is written again (as if none were there).
    add_entries(writes, p.id, p.number, p.old, p.score, false, false, false, p.at)
    changed = changed + 1
  end
end
send(writes)
save_numbers(numbers)
return changed
