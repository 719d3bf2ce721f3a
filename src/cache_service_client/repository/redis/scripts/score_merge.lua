-- The score_merge script (cache_service_client.repository.redis.lua.SCORE_MERGE).
-- Walk the bucket's updated indexes by (score, id), merged. ARGV[3]: one datatype, or '' for
-- all; ARGV[4], ARGV[5]: lowest and highest score allowed (inclusive, '-inf' / '+inf' for none);
-- ARGV[6], ARGV[7]: the (score, id) to resume after ('' for the start); ARGV[8]: how many live
-- matches to return; ARGV[9]: "1" backwards; ARGV[10]: persist filter ('' none, '0', '1');
-- ARGV[11]: most entries to examine; ARGV[12]: "1" to return the values too; ARGV[13]: "1" to
-- return the bucket's device count too.
-- Returns {id, score, id, score, ... of live matches in order; the last (score, id) examined,
-- or false when every index is exhausted (scores as integer replies); their values (when
-- asked; false for a key of another type); the count or false}.
local reverse = ARGV[9] == '1'
local lo, hi = ARGV[4], ARGV[5]
local want, budget = tonumber(ARGV[8]), tonumber(ARGV[11])
local persist = tonumber(ARGV[10])  -- nil: no filter
local cs, cid = ARGV[6], ARGV[7]
-- The rank to start at in one index: after the cursor, or at the bound the walk starts from.
local function position(shard)
  if cs == '' then
    if reverse then
      if hi == '+inf' then return 0 end
      return redis.call('ZCOUNT', shard, '(' .. hi, '+inf')
    end
    if lo == '-inf' then return 0 end
    return redis.call('ZCOUNT', shard, '-inf', '(' .. lo)
  end
  local s = redis.call('ZSCORE', shard, cid)
  if s and tonumber(s) == tonumber(cs) then
    if reverse then return redis.call('ZREVRANK', shard, cid) + 1 end
    return redis.call('ZRANK', shard, cid) + 1
  end
  -- The cursor's member is not here (another datatype, or gone): binary search its place
  -- among the equal scores.
  local first, last
  if reverse then
    first = redis.call('ZCOUNT', shard, '(' .. cs, '+inf')
    last = redis.call('ZCOUNT', shard, cs, '+inf')
  else
    first = redis.call('ZCOUNT', shard, '-inf', '(' .. cs)
    last = redis.call('ZCOUNT', shard, '-inf', cs)
  end
  while first < last do
    local mid = math.floor((first + last) / 2)
    local member
    if reverse then member = redis.call('ZREVRANGE', shard, mid, mid)[1]
    else member = redis.call('ZRANGE', shard, mid, mid)[1] end
    if (reverse and bytes_lt(cid, member)) or ((not reverse) and bytes_lt(member, cid)) then
      first = mid + 1
    else
      last = mid
    end
  end
  return first
end
local names
if ARGV[3] ~= '' then names = {ARGV[3]} else names = redis.call('SMEMBERS', KEYS[3]) end
local k = #names
-- One "head" per index, in parallel arrays: its key, the next rank to fetch and how many
-- entries to fetch then, the fetched entries and the position in them, and its current entry:
-- id, score and sort value (the score, or minus the score backwards, so that the smallest sort
-- value always comes first).
local shard, next_rank, fetch, buf, at = {}, {}, {}, {}, {}
local head_id, head_score, head_value = {}, {}, {}
local active, n_active = {}, 0
-- The first fetch of each index is its fair share of the page (with a margin when several
-- share it); an index that needs more fetches twice as much each time, never more than the
-- budget lets the walk examine. Every score fetched costs a number formatted and parsed, so
-- fetching little matters.
local first_fetch = want
if k > 1 then first_fetch = math.ceil(want * 1.25 / k) + 2 end
local stop_at = nil  -- the bound the walk runs towards, as a sort value
if reverse and lo ~= '-inf' then stop_at = -tonumber(lo) end
if (not reverse) and hi ~= '+inf' then stop_at = tonumber(hi) end
-- Load head i's next entry; false when its index is exhausted or the bound is passed.
local function load(i)
  local b, a = buf[i], at[i]
  if a > #b then
    local r, size = next_rank[i], math.min(fetch[i], math.max(budget, 1))
    if reverse then
      b = redis.call('ZREVRANGE', shard[i], r, r + size - 1, 'WITHSCORES')
    else
      b = redis.call('ZRANGE', shard[i], r, r + size - 1, 'WITHSCORES')
    end
    next_rank[i], fetch[i] = r + size, size * 2
    buf[i], a = b, 1
    if #b == 0 then return false end
  end
  local score = tonumber(b[a + 1])
  local v = score
  if reverse then v = -score end
  if stop_at and v > stop_at then return false end
  head_id[i], head_score[i], head_value[i] = b[a], score, v
  at[i] = a + 2
  return true
end
for i = 1, k do
  shard[i] = ARGV[2] .. names[i]
  next_rank[i], fetch[i] = position(shard[i]), first_fetch
  buf[i], at[i] = {}, 1
  if load(i) then
    n_active = n_active + 1
    active[n_active] = i
  end
end
local out, n_out, found = {}, 0, 0
local values, with_values = {}, ARGV[12] == '1'
local last_score, last_id = nil, nil
-- The active slot whose entry was taken last: its next entry is loaded only when needed, so
-- that a full page never fetches beyond it.
local taken_slot = nil
-- Take up to `n` entries that pass the persist filter, in order, into the candidate arrays.
local cand_id, cand_score, cand_head = {}, {}, {}
local function take(n)
  local taken = 0
  while taken < n and budget > 0 do
    if taken_slot then
      if not load(active[taken_slot]) then
        active[taken_slot] = active[n_active]
        active[n_active] = nil
        n_active = n_active - 1
      end
      taken_slot = nil
    end
    if n_active == 0 then break end
    -- The head with the smallest sort value; equal ones in id order (reversed backwards).
    local slot, best = 1, active[1]
    local bv, bid = head_value[best], head_id[best]
    for j = 2, n_active do
      local i = active[j]
      local v = head_value[i]
      if v < bv or (v == bv and (bytes_lt(head_id[i], bid) ~= reverse)) then
        slot, best, bv, bid = j, i, v, head_id[i]
      end
    end
    budget = budget - 1
    local score = head_score[best]
    last_score, last_id = score, bid
    -- The persist flag is the score's lowest bit.
    if persist == nil or score % 2 == persist then
      taken = taken + 1
      cand_id[taken], cand_score[taken], cand_head[taken] = bid, score, best
    end
    taken_slot = slot
  end
  return taken
end
local function emit(id, score, value)
  out[n_out + 1], out[n_out + 2] = id, score
  n_out = n_out + 2
  found = found + 1
  if with_values then values[found] = value end
end
while found < want do
  local n = take(want - found)
  if n == 0 then break end
  if with_values then
    local got, live = read_values(cand_id, n)
    for j = 1, n do
      if live[j] then emit(cand_id[j], cand_score[j], got[j]) end
    end
  else
    for j = 1, n do
      if alive(cand_id[j]) then emit(cand_id[j], cand_score[j], nil) end
    end
  end
end
local total = false
if ARGV[13] == '1' then total = alive_count(now_ms()) end
-- More may follow unless every index ran out (stopped on the budget or a full page).
local continuation = false
if n_active > 0 and last_id then
  continuation = {last_score, last_id}
end
return {out, continuation, values, total}
