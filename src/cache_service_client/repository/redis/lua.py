"""The server-side scripts that keep values and indexes consistent.

Every script works inside one bucket (one hash slot in Redis Cluster) and takes the bucket's
fixed index keys as ``KEYS[1..3]`` (ids, expiry, datatypes; see
:class:`~cache_service_client.KeyStrategy`), the bucket's device key prefix as ``ARGV[1]`` and
the prefix of its per-datatype updated indexes as ``ARGV[2]``. Device keys are ``KEYS[4..]``
where a script writes them; where a script finds ids in an index it forms their keys as
``ARGV[1] .. id`` (``KeyStrategy.device_key(id)`` is exactly that) and the updated index of a
datatype as ``ARGV[2] .. datatype``.

Expiry follows Redis: a key that expires at ``at`` ms is gone once the server time ``now > at``.
Values are written with ``PXAT`` and the same ``at`` goes into the expiry index, so index and
key agree to the millisecond.

Reads never write, so every read works on a read-only replica: the read scripts skip index
entries whose key is gone (and count from the expiry index, which tells the expired ones).
Writes remove them: every put that sets a TTL first removes up to :data:`PRUNE_PER_WRITE`
expired entries of its bucket, and ``repair`` removes the rest (and entries of keys deleted
behind the library's back).
"""

from __future__ import annotations

from cache_service_client.repository.redis.ops import LuaScript

__all__ = [
    "COUNT",
    "DELETE",
    "INFO",
    "PRUNE_PER_WRITE",
    "PUT",
    "RANGE",
    "REINDEX",
    "SCORE_MERGE",
    "SWEEP",
]

#: Expired index entries a put with a TTL removes from its bucket, at most, before it writes.
PRUNE_PER_WRITE = 16

# Shared helpers, put in front of the scripts that need them.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local datatypes = nil
local function shard_of(id)
  if datatypes == nil then datatypes = redis.call('SMEMBERS', KEYS[3]) end
  for _, dt in ipairs(datatypes) do
    local key = ARGV[2] .. dt
    local score = redis.call('ZSCORE', key, id)
    if score then return key, dt, score end
  end
  return nil
end
-- Remove `id` from the updated index `key` of datatype `dt`, and `dt` from the datatypes when
-- that empties it.
local function drop_from(key, dt, id)
  redis.call('ZREM', key, id)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[3], dt)
    datatypes = nil
  end
end
local function drop_shard_entry(id)
  local key, dt = shard_of(id)
  if key then drop_from(key, dt, id) end
end
local function unindex(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  drop_shard_entry(id)
end
local function alive(id)
  return redis.call('EXISTS', ARGV[1] .. id) == 1
end
-- Writes that cannot half-happen: a write script first reads every key it will change (a read
-- of a key of the wrong type, or of one the user may not access, fails before anything is
-- written) and asks the ACL whether it may change the keys it did not declare (Redis 7+; the
-- server checks the declared ones before the script runs); then it writes, a value first (so
-- that under maxmemory the first write, which the server refuses, is the script's first).
local function may(cmd, key, ...)
  if redis.acl_check_cmd and not redis.acl_check_cmd(cmd, key, ...) then
    error({err = 'NOPERM this user has no permission to run ' .. cmd .. ' on the key ' .. key})
  end
end
local function check_fixed_keys()
  redis.call('ZSCORE', KEYS[1], '')
  redis.call('ZSCORE', KEYS[2], '')
  redis.call('SCARD', KEYS[3])
end
-- The reading half of removing expired entries: up to `limit` of them whose key is gone (but
-- none in `skip`), each as {id, its updated index or false, its datatype}.
local function expired_entries(now, limit, skip)
  local found = {}
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    if not skip[id] and not alive(id) then
      local key, dt = shard_of(id)
      if key then may('ZREM', key, id) else key = false end
      found[#found + 1] = {id, key, dt}
    end
  end
  return found
end
-- The writing half.
local function remove_entries(entries)
  for _, e in ipairs(entries) do
    redis.call('ZREM', KEYS[1], e[1])
    redis.call('ZREM', KEYS[2], e[1])
    if e[2] then drop_from(e[2], e[3], e[1]) end
  end
end
-- Byte-wise a < b, as Redis orders members (Lua's own < follows the server's locale).
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- The values of the first `n` devices of `ids` (one MGET), and whether each is live: false for
-- a key that is gone; a key of another type is live with the value false (reported as
-- corrupted).
local function read_values(ids, n)
  local keys = {}
  for j = 1, n do keys[j] = ARGV[1] .. ids[j] end
  local got = redis.call('MGET', unpack(keys))
  local live = {}
  for j = 1, n do
    if got[j] then
      live[j] = true
    else
      live[j] = redis.call('EXISTS', keys[j]) == 1
      got[j] = false
    end
  end
  return got, live
end
local function alive_count(now)
  return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
end
-- Index one device: ids, expiry (at = 0: none) and the updated index of its datatype.
local function index(id, dt, score, at)
  local target = ARGV[2] .. dt
  if not redis.call('ZSCORE', target, id) then
    if redis.call('ZSCORE', KEYS[1], id) then drop_shard_entry(id) end
    if redis.call('SADD', KEYS[3], dt) == 1 then datatypes = nil end
  end
  redis.call('ZADD', target, score, id)
  redis.call('ZADD', KEYS[1], 0, id)
  if at > 0 then
    redis.call('ZADD', KEYS[2], at, id)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
"""

PUT = LuaScript.of(
    "put",
    _PRELUDE
    + """
-- ARGV[3]: ttl_ms (0: none); ARGV[4]: "1" to write a device only if it is newer; then
-- (id, value, datatype, score) per device in KEYS[4..] (each id once).
-- "Newer": no value is stored, or the stored one is indexed with an older last_updated (the
-- index keeps milliseconds: score = ms * 2 + persist); a value nobody indexed counts as older.
-- A put with a TTL also removes up to {prune} expired index entries of the bucket.
-- Returns how many devices were written.
local ttl = tonumber(ARGV[3])
local newer = ARGV[4] == '1'
local now, at = nil, 0
if ttl > 0 then
  now = now_ms()
  at = now + ttl
end
local n = #KEYS - 3
-- Reads: what each write will change.
check_fixed_keys()
local plan, batch = {}, {}
for i = 1, n do
  local base = 4 * i + 1
  local id, key, dt, score = ARGV[base], KEYS[3 + i], ARGV[base + 2], ARGV[base + 3]
  batch[id] = true
  local target = ARGV[2] .. dt
  may('ZSCORE', target, id)
  local here = redis.call('ZSCORE', target, id)
  local old_key, old_dt, old_score = false, false, here
  if not here and redis.call('ZSCORE', KEYS[1], id) then
    local k, d, sc = shard_of(id)
    if k then
      may('ZREM', k, id)
      old_key, old_dt, old_score = k, d, sc
    end
  end
  local write = true
  if newer and old_score and redis.call('EXISTS', key) == 1
      and math.floor(tonumber(old_score) / 2) >= math.floor(tonumber(score) / 2) then
    write = false
  end
  if write then may('ZADD', target, '0', id) end
  plan[i] = {write, target, here, old_key, old_dt}
end
local expired = {}
if now then expired = expired_entries(now, {prune}, batch) end
-- Writes: the values first, then their index entries, then the expired entries.
local written = 0
for i = 1, n do
  if plan[i][1] then
    local base = 4 * i + 1
    if at > 0 then
      redis.call('SET', KEYS[3 + i], ARGV[base + 1], 'PXAT', at)
    else
      redis.call('SET', KEYS[3 + i], ARGV[base + 1])
    end
    written = written + 1
  end
end
for i = 1, n do
  local write, target, here, old_key, old_dt = unpack(plan[i])
  if write then
    local base = 4 * i + 1
    local id = ARGV[base]
    if old_key then drop_from(old_key, old_dt, id) end
    if not here then redis.call('SADD', KEYS[3], ARGV[base + 2]) end
    redis.call('ZADD', target, ARGV[base + 3], id)
    redis.call('ZADD', KEYS[1], 0, id)
    if at > 0 then
      redis.call('ZADD', KEYS[2], at, id)
    else
      redis.call('ZREM', KEYS[2], id)
    end
  end
end
remove_entries(expired)
return written
""".replace("{prune}", str(PRUNE_PER_WRITE)),
)

DELETE = LuaScript.of(
    "delete",
    _PRELUDE
    + """
-- ARGV[3..]: the ids of the device keys in KEYS[4..] (each id once). Returns how many existed.
-- Reads: the updated index holding each id.
check_fixed_keys()
local n = #KEYS - 3
local shards = {}
for i = 1, n do
  local id = ARGV[2 + i]
  local key, dt = shard_of(id)
  if key then may('ZREM', key, id) else key = false end
  shards[i] = {key, dt}
end
-- Writes.
local deleted = 0
for i = 1, n do
  local id = ARGV[2 + i]
  deleted = deleted + redis.call('DEL', KEYS[3 + i])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if shards[i][1] then drop_from(shards[i][1], shards[i][2], id) end
end
return deleted
""",
)

RANGE = LuaScript.of(
    "range",
    _PRELUDE
    + """
-- Walk the ids index by id. ARGV[3]: lex start, ARGV[4]: lex stop, ARGV[5]: how many entries
-- to examine, ARGV[6]: "1" to walk backwards (start and stop then swap roles), ARGV[7]: "1" to
-- return each id's datatype and score too, ARGV[8]: "1" to return the values too, ARGV[9]: "1"
-- to return the bucket's device count too.
-- Returns {ids whose key exists (with datatype and score when asked), last id examined or
-- false when the range ended, their values (when asked), the count or false}. Entries whose
-- key is gone are skipped.
local count = tonumber(ARGV[5])
local ids
if ARGV[6] == '1' then
  ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4], 'LIMIT', 0, count)
else
  ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4], 'LIMIT', 0, count)
end
local out, values = {}, {}
local with_values = ARGV[8] == '1'
local got, live
if with_values and #ids > 0 then got, live = read_values(ids, #ids) end
for j, id in ipairs(ids) do
  local here
  if with_values then here = live[j] else here = alive(id) end
  if here then
    out[#out + 1] = id
    if ARGV[7] == '1' then
      local _, dt, score = shard_of(id)
      out[#out + 1] = dt or ''
      out[#out + 1] = score or ''
    end
    if with_values then values[#values + 1] = got[j] end
  end
end
local last = false
if #ids == count then last = ids[#ids] end
local total = false
if ARGV[9] == '1' then total = alive_count(now_ms()) end
return {out, last, values, total}
""",
)

SCORE_MERGE = LuaScript.of(
    "score_merge",
    _PRELUDE
    + """
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
""",
)

COUNT = LuaScript.of(
    "count",
    _PRELUDE
    + """
-- The bucket's live devices: indexed ones minus those the expiry index says have expired.
return alive_count(now_ms())
""",
)

INFO = LuaScript.of(
    "info",
    _PRELUDE
    + """
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
""",
)

REINDEX = LuaScript.of(
    "reindex",
    _PRELUDE
    + """
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
""",
)

SWEEP = LuaScript.of(
    "sweep",
    _PRELUDE
    + """
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
""",
)
