-- The info script (cache_service_client.repository.redis.lua.INFO).
-- ARGV[3]: most entries to examine from each end of each index.
-- Returns {count, lowest live score or false, highest live score or false}.
local now = now_ms()
local function live(id)
  local at = redis.call('ZSCORE', KEYS[2], id)
  if at and tonumber(at) < now then return false end
  return alive(id)
end
local function first_live(shard, reverse)
  local budget = tonumber(ARGV[3])
  local start = 0
  while budget > 0 do
    local batch
    if reverse then
      batch = redis.call('ZREVRANGE', shard, start, start + 15, 'WITHSCORES')
    else
      batch = redis.call('ZRANGE', shard, start, start + 15, 'WITHSCORES')
    end
    if #batch == 0 then return false end
    for i = 1, #batch, 2 do
      budget = budget - 1
      if live(batch[i]) then return tonumber(batch[i + 1]) end
    end
    start = start + 16
  end
  return false
end
local lowest, highest = false, false
for _, dt in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local shard = ARGV[2] .. dt
  local low = first_live(shard, false)
  if low and (not lowest or low < lowest) then lowest = low end
  local high = first_live(shard, true)
  if high and (not highest or high > highest) then highest = high end
end
if lowest then lowest = string.format('%d', lowest) end
if highest then highest = string.format('%d', highest) end
return {alive_count(now), lowest, highest}
