-- The reindex script (cache_service_client.repository.redis.lua.REINDEX).
-- Make the indexes agree with values read by a repair. ARGV[3..]: (id, datatype, score) per
-- device in KEYS[4..]. A key that is gone by now is unindexed instead.
-- Returns how many devices needed a change.
local changed = 0
for i = 1, #KEYS - 3 do
  local base = 3 * i
  local id, dt, score = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local key = KEYS[3 + i]
  if redis.call('EXISTS', key) == 1 then
    local pttl = redis.call('PTTL', key)
    local at = 0
    if pttl > 0 then at = now_ms() + pttl end
    -- A stale entry in another datatype's index goes first.
    local stale = false
    for _, other in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      if other ~= dt and redis.call('ZREM', ARGV[2] .. other, id) == 1 then
        stale = true
        if redis.call('EXISTS', ARGV[2] .. other) == 0 then redis.call('SREM', KEYS[3], other) end
      end
    end
    datatypes = nil
    local had = redis.call('ZSCORE', ARGV[2] .. dt, id)
    local indexed = redis.call('ZSCORE', KEYS[1], id)
    local old_at = redis.call('ZSCORE', KEYS[2], id)
    local expiry_ok = (at == 0 and not old_at) or (at > 0 and old_at and
      math.abs(tonumber(old_at) - at) <= 1000)
    if stale or not (had and tonumber(had) == tonumber(score) and indexed and expiry_ok) then
      if had and tonumber(had) == tonumber(score) and indexed and at > 0 then
        redis.call('ZADD', KEYS[2], at, id)
      else
        index(id, dt, score, at)
      end
      changed = changed + 1
    end
  else
    unindex(id)
  end
end
return changed
