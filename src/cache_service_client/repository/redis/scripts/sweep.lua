-- The sweep script (cache_service_client.repository.redis.lua.SWEEP).
-- Remove index entries whose device is gone from one index (KEYS[4]), scanning it with ZSCAN or
-- SSCAN from cursor ARGV[3]. For the datatypes set (KEYS[4] == KEYS[3]) empty datatypes are
-- dropped. Returns {next cursor, entries removed}.
local key = KEYS[4]
local removed = 0
if key == KEYS[3] then
  local reply = redis.call('SSCAN', key, ARGV[3], 'COUNT', 200)
  for _, dt in ipairs(reply[2]) do
    if redis.call('EXISTS', ARGV[2] .. dt) == 0 then
      redis.call('SREM', key, dt)
      removed = removed + 1
    end
  end
  return {reply[1], removed}
end
local reply = redis.call('ZSCAN', key, ARGV[3], 'COUNT', 200)
local entries = reply[2]
for i = 1, #entries, 2 do
  local id = entries[i]
  if not alive(id) then
    if redis.call('ZREM', key, id) == 1 then removed = removed + 1 end
    unindex(id)
  elseif key ~= KEYS[1] and key ~= KEYS[2] and not redis.call('ZSCORE', KEYS[1], id) then
    -- in an updated index but not in ids: a stale entry of a datatype change
    redis.call('ZREM', key, id)
    removed = removed + 1
  end
end
if key ~= KEYS[1] and key ~= KEYS[2] and redis.call('EXISTS', key) == 0 then
  local dt = string.sub(key, #ARGV[2] + 1)
  redis.call('SREM', KEYS[3], dt)
end
return {reply[1], removed}
