-- The range script (cache_service_client.repository.redis.lua.RANGE).
-- Walk id-ordered blocks by id: in the ids index the block of persist ARGV[4] (ARGV[3] ''),
-- or in the by-type index the block of datatype ARGV[3] and persist ARGV[4]; ARGV[4] '': both
-- persist blocks, merged by id.
-- ARGV[5], ARGV[6]: the lowest and highest id, as ZRANGEBYLEX takes them ('-', '+', '[id',
-- '(id'); ARGV[7]: how many matches to find (examining at most max(4 x that, {budget})
-- entries); ARGV[8]: "1" to walk backwards (from the highest); ARGV[9], ARGV[10]: the lowest
-- and highest time score a device may have ('-inf', '+inf': any); ARGV[11]: "1" to return the
-- values too; ARGV[12]: "1" to return the bucket's device count too.
-- Returns {ids whose key exists, in walk order; the last id examined, or false when the range
-- ended; their values (when asked; false for a key of another type); the count or false}.
unversioned()
local out, values, last = {}, {}, false
local total = false
if ARGV[12] == '1' then total = alive_count(now_ms()) end
local key, base = KEYS[1], 0
if ARGV[3] ~= '' then
  key = KEYS[4]
  local number = redis.call('HGET', KEYS[3], ARGV[3])
  if not number then return {out, last, values, total} end
  base = tonumber(number) * 2
end
local want, reverse = tonumber(ARGV[7]), ARGV[8] == '1'
local lo, hi = ARGV[9], ARGV[10]
local timed = lo ~= '-inf' or hi ~= '+inf'
lo, hi = score_bound(lo), score_bound(hi)
local with_values = ARGV[11] == '1'
-- The rank of an id bound inside the block of ranks [first, after) with score `score`.
local function rank(bound, is_low, first, after, score)
  local kind = string.sub(bound, 1, 1)
  if kind == '-' then return first end
  if kind == '+' then return after end
  -- A low '[x' starts at x, a low '(x' after it; a high '[x' stops after x, a high '(x' at it.
  return rank_in_block(key, first, after, score, string.sub(bound, 2), (kind == '(') == is_low)
end
-- Each block to walk: its rank range left to walk, its fetched ids and the next to take.
local blocks, sizes, all = {}, {}, 0
local scores = {base, base + 1}
if ARGV[4] ~= '' then scores = {base + tonumber(ARGV[4])} end
for i, score in ipairs(scores) do
  local first, after = block(key, score)
  local start = rank(ARGV[5], true, first, after, score)
  local stop = rank(ARGV[6], false, first, after, score)
  blocks[i] = {start = start, stop = math.max(start, stop), buf = {}, at = 1, more = true}
  sizes[i] = blocks[i].stop - start
  all = all + sizes[i]
end
-- The first fetch of each block is its share of the matches wanted (with a margin when two
-- share them); each further one twice as large.
for i, b in ipairs(blocks) do
  b.fetch = want
  if #blocks > 1 and all > 0 then b.fetch = math.ceil(want * sizes[i] / all * 1.25) + 2 end
end
-- The block's next id in walk order (nil when it is walked to its end).
local function head(b)
  if b.at > #b.buf then
    if not b.more then return nil end
    local got, more = window(key, b.start, b.stop, b.fetch, reverse, false)
    if reverse then b.stop = b.stop - #got else b.start = b.start + #got end
    b.buf, b.at, b.more, b.fetch = got, 1, more, b.fetch * 2
    if #got == 0 then return nil end
  end
  return b.buf[b.at]
end
local budget = math.max(4 * want, {budget})
local ended = false
-- With a time filter, a batch of candidates grows twofold while too few pass it.
local step = want
while #out < want and budget > 0 do
  -- Take the next entries in order: as many as matches are still wanted (more with a time
  -- filter), checked in one ZMSCORE and one MGET.
  local take = want - #out
  if timed then
    take = math.max(take, step)
    step = step * 2
  end
  take = math.min(take, budget, 1024)
  local taken = {}
  while #taken < take do
    local best, best_id = nil, nil
    for _, b in ipairs(blocks) do
      local id = head(b)
      if id and (not best_id or (bytes_lt(id, best_id) ~= reverse)) then best, best_id = b, id end
    end
    if not best then ended = true break end
    best.at = best.at + 1
    taken[#taken + 1] = best_id
  end
  budget = budget - #taken
  if #taken > 0 then last = taken[#taken] end
  local candidates = taken
  if timed and #taken > 0 then
    candidates = {}
    local scores = redis.call('ZMSCORE', KEYS[5], unpack(taken))
    for j, id in ipairs(taken) do
      local s = scores[j]
      if s and tonumber(s) >= lo and tonumber(s) <= hi then candidates[#candidates + 1] = id end
    end
  end
  keep_live(candidates, out, values, with_values)
  if ended then break end
end
if ended then
  last = false
elseif last then
  -- The walk stopped on its budget or on a full page: it ended anyway if no entry is left.
  local left = false
  for _, b in ipairs(blocks) do
    if head(b) then left = true end
  end
  if not left then last = false end
end
return {out, last, values, total}
