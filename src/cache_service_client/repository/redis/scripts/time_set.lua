-- The time_set script (cache_service_client.repository.redis.lua.TIME_SET).
-- Plan a time range sorted by id, which no index orders: count the range in the time index
-- (by-time, ARGV[3] '', or datatype ARGV[3]'s); when it holds at most max(ARGV[8],
-- sqrt(ARGV[7] x the devices the by-id walk would cover)) entries, return them all (the client
-- sorts them), else nothing (the client walks by id and checks each device's score: with
-- more entries in the range, fewer are passed over). ARGV[4], ARGV[5]: the lowest and highest
-- score (inclusive); ARGV[6]: persist filter ('' none, '0', '1'); ARGV[7]: the page size.
-- Returns {entries in the range, 1 when they are returned (else 0), the live ones' ids}.
unversioned()
local key, walked = KEYS[5], nil
local persist = ARGV[6]
if ARGV[3] ~= '' then
  local number = redis.call('HGET', KEYS[3], ARGV[3])
  if not number then return {0, 1, {}} end
  key = time_key(number)
  local low, high = tonumber(number) * 2, tonumber(number) * 2 + 1
  if persist ~= '' then low, high = low + tonumber(persist), low + tonumber(persist) end
  walked = redis.call('ZCOUNT', KEYS[4], low, high)
elseif persist ~= '' then
  walked = redis.call('ZCOUNT', KEYS[1], persist, persist)
else
  walked = redis.call('ZCARD', KEYS[1])
end
local n = redis.call('ZCOUNT', key, ARGV[4], ARGV[5])
local small = math.max(tonumber(ARGV[8]), math.floor(math.sqrt(tonumber(ARGV[7]) * walked)))
if n > small then return {n, 0, {}} end
local got = redis.call('ZRANGEBYSCORE', key, ARGV[4], ARGV[5], 'WITHSCORES')
local ids = {}
local want = tonumber(persist)
for i = 1, #got, 2 do
  if (want == nil or tonumber(got[i + 1]) % 2 == want) and alive(got[i]) then
    ids[#ids + 1] = got[i]
  end
end
return {n, 1, ids}
