-- The time_range script (cache_service_client.repository.redis.lua.TIME_RANGE).
-- Walk a time index by (score, id): by-time (ARGV[3] '') or the one of datatype ARGV[3].
-- ARGV[4], ARGV[5]: the lowest and highest score (inclusive; '-inf', '+inf': none); ARGV[6],
-- ARGV[7]: the (score, id) to resume after ('' for the start); ARGV[8]: how many matches to
-- find (examining at most max(4 x that, {budget}) entries); ARGV[9]: "1" to walk backwards;
-- ARGV[10]: persist filter ('' none, '0', '1'); ARGV[11]: "1" to return the values too;
-- ARGV[12]: "1" to return the bucket's device count.
-- Returns {id, score, id, score, ... of live matches in walk order; the last (score, id)
-- examined, or false when the range ended (scores as integer replies); their values (when
-- asked; false for a key of another type); the count or false}.
unversioned()
local out, values, continuation, total = {}, {}, false, false
if ARGV[12] == '1' then total = alive_count(now_ms()) end
local key = KEYS[5]
if ARGV[3] ~= '' then
  local number = redis.call('HGET', KEYS[3], ARGV[3])
  if not number then return {out, continuation, values, total} end
  key = time_key(number)
end
local lo, hi = ARGV[4], ARGV[5]
local reverse = ARGV[9] == '1'
local start, stop = 0, nil
if lo ~= '-inf' then start = redis.call('ZCOUNT', key, '-inf', '(' .. lo) end
if hi == '+inf' then stop = redis.call('ZCARD', key) else stop = redis.call('ZCOUNT', key, '-inf', hi) end
if ARGV[6] ~= '' then
  local cs = tonumber(ARGV[6])
  local first, last = block(key, cs)
  local r = rank_in_block(key, first, last, cs, ARGV[7], not reverse)
  if reverse then stop = math.min(stop, r) else start = math.max(start, r) end
end
local persist = tonumber(ARGV[10])  -- nil: no filter
local with_values = ARGV[11] == '1'
local want = tonumber(ARGV[8])
-- Examine entries in windows until `want` matches are found or the budget is spent.
local budget, size, found = math.max(4 * want, {budget}), want, 0
while true do
  local got, more = window(key, start, stop, math.min(size, budget), reverse, true)
  local n = #got / 2
  budget = budget - n
  if reverse then stop = stop - n else start = start + n end
  continuation = false
  if more then continuation = {tonumber(got[#got]), got[#got - 1]} end
  local ids, scores = {}, {}
  for i = 1, #got, 2 do
    local score = tonumber(got[i + 1])
    -- The persist flag is the score's lowest bit.
    if persist == nil or score % 2 == persist then
      ids[#ids + 1], scores[#scores + 1] = got[i], score
    end
  end
  local vals, live = {}, {}
  if #ids > 0 then vals, live = read_values(ids, #ids) end
  for j = 1, #ids do
    if live[j] then
      out[#out + 1], out[#out + 2] = ids[j], scores[j]
      if with_values then values[#values + 1] = vals[j] end
      found = found + 1
    end
  end
  if not more or found >= want or budget <= 0 then break end
  size = size * 2
end
return {out, continuation, values, total}
