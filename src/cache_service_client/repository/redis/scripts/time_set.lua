-- The time_set script (cache_service_client.repository.redis.lua.TIME_SET).
-- A time range sorted by id, which no index orders: count the range in the time index
-- (by-time, ARGV[3] '', or datatype ARGV[3]'s). When it holds at most max(ARGV[8],
-- sqrt(ARGV[7] x the devices a walk by id would cover x {ratio})) entries, read it whole, sort
-- it by id here and return the live matches after the cursor; else nothing (the client walks by
-- id and checks each device's score: with more entries in the range, fewer are passed over;
-- {ratio} is how much more an entry walked costs than an entry read and sorted).
-- ARGV[4], ARGV[5]: the lowest and highest score (inclusive); ARGV[6]: persist filter ('' none,
-- '0', '1'); ARGV[7]: the page size; ARGV[8]: the least range size read whole; ARGV[9]: only
-- ids with this prefix; ARGV[10]: the id to go on after ('' for the start); ARGV[11]: "1" to
-- walk backwards; ARGV[12]: how many matches to return; ARGV[13]: "1" to return the values.
-- Returns {entries in the range, 1 when it was read whole (else 0 and nothing more), the live
-- matching ids in walk order, the last id examined or false when the range ended, their values
-- (when asked; false for a key of another type)}.
unversioned()
local key, walked = KEYS[5], nil
local persist = ARGV[6]
if ARGV[3] ~= '' then
  local number = redis.call('HGET', KEYS[3], ARGV[3])
  if not number then return {0, 1, {}, false, {}} end
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
local small = math.floor(math.sqrt(tonumber(ARGV[7]) * walked * {ratio}))
if n > math.max(tonumber(ARGV[8]), small) then return {n, 0, {}, false, {}} end
local want = tonumber(persist)
local prefix = ARGV[9]
local ids = {}
local got
if want == nil then
  got = redis.call('ZRANGEBYSCORE', key, ARGV[4], ARGV[5])
else
  got = redis.call('ZRANGEBYSCORE', key, ARGV[4], ARGV[5], 'WITHSCORES')
end
local step = 1
if want ~= nil then step = 2 end
for i = 1, #got, step do
  local id = got[i]
  if (want == nil or tonumber(got[i + 1]) % 2 == want)
      and (prefix == '' or string.sub(id, 1, #prefix) == prefix) then
    ids[#ids + 1] = id
  end
end
if bytewise then table.sort(ids) else table.sort(ids, bytes_lt) end
local reverse = ARGV[11] == '1'
-- The first position of the walk: after the cursor.
local first, last = 1, #ids
local after = ARGV[10]
if after ~= '' then
  local lo_i, hi_i = 1, #ids + 1  -- the first index whose id is greater than `after`
  while lo_i < hi_i do
    local mid = math.floor((lo_i + hi_i) / 2)
    if bytes_lt(after, ids[mid]) then hi_i = mid else lo_i = mid + 1 end
  end
  if reverse then
    last = lo_i - 1
    if last >= 1 and ids[last] == after then last = last - 1 end
  else
    first = lo_i
  end
end
local count = tonumber(ARGV[12])
local with_values = ARGV[13] == '1'
local out, values = {}, {}
local at, examined = nil, false
if reverse then at = last else at = first end
-- Take the next ids in batches of the matches still wanted; keep the live ones.
while #out < count do
  local batch = {}
  while #batch < count - #out and at >= first and at <= last do
    batch[#batch + 1] = ids[at]
    if reverse then at = at - 1 else at = at + 1 end
  end
  if #batch == 0 then break end
  examined = batch[#batch]
  keep_live(batch, out, values, with_values)
end
if at < first or at > last then examined = false end
return {n, 1, out, examined, values}
