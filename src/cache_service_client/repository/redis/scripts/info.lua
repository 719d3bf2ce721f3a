-- The info script (cache_service_client.repository.redis.lua.INFO).
-- ARGV[3]: most entries to examine from each end of the by-time index.
-- Returns {count, lowest live score or false, highest live score or false}.
unversioned()
local now = now_ms()
local function live(id)
  local at = redis.call('ZSCORE', KEYS[2], id)
  if at and tonumber(at) < now then return false end
  return alive(id)
end
local function first_live(reverse)
  local budget = tonumber(ARGV[3])
  local start = 0
  while budget > 0 do
    local batch
    if reverse then
      batch = redis.call('ZREVRANGE', KEYS[5], start, start + 15, 'WITHSCORES')
    else
      batch = redis.call('ZRANGE', KEYS[5], start, start + 15, 'WITHSCORES')
    end
    if #batch == 0 then return false end
    for i = 1, #batch, 2 do
      budget = budget - 1
      if live(batch[i]) then return string.format('%d', tonumber(batch[i + 1])) end
    end
    start = start + 16
  end
  return false
end
return {alive_count(now), first_live(false), first_live(true)}
