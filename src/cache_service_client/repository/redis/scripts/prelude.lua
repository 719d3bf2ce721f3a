-- Shared helpers, put in front of every script (see lua.py).
-- KEYS[1..6]: ids, expiry, types, by-type, by-time, layout; ARGV[1]: the device key prefix,
-- ARGV[2]: the prefix of the per-datatype time indexes (the datatype number follows).
-- A script gets the definitions below that it uses (see lua.py).

local LAYOUT = '{layout}'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Stop the script with the error reply `text` ("CODE message"). Redis 7 takes it as a table,
-- as it was given; Redis 6 takes only a string, and prefixes the place in the script (the
-- driver finds the code after it).
local function fail(text)
  if redis.REDIS_VERSION then error({err = text}) end
  error(text)
end
-- Check the bucket's index layout version; true when the bucket has none yet (nothing was
-- ever indexed in it), so that a write must set it.
local function unversioned()
  local version = redis.call('GET', KEYS[6])
  if version == LAYOUT then return false end
  if version then
    fail('LAYOUT the indexes of this cache are in layout version ' .. version ..
      ', which this library does not read (it reads version ' .. LAYOUT .. ')')
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    fail('LAYOUT the indexes of this cache are in layout version 1; run repair to ' ..
      'rebuild them in version ' .. LAYOUT)
  end
  return true
end
local function alive(id)
  return redis.call('EXISTS', ARGV[1] .. id) == 1
end
local time_keys = {}
local function time_key(number)
  local key = time_keys[number]
  if not key then
    key = ARGV[2] .. number
    time_keys[number] = key
  end
  return key
end
-- A device's datatype number and persist flag, from its by-type score (nil: not indexed).
local function placed(id)
  local part = redis.call('ZSCORE', KEYS[4], id)
  if not part then return nil end
  part = tonumber(part)
  return math.floor(part / 2), part % 2
end
-- Writes that cannot half-happen: a write script first reads every key it will change (a read
-- of a key of the wrong type, or of one the user may not access, fails before anything is
-- written) and asks the ACL whether it may change the keys it did not declare (Redis 7+; the
-- server checks the declared ones before the script runs); then it writes (under maxmemory
-- the server refuses a script's first write only, which leaves nothing half-done).
local function may(cmd, key, ...)
  if redis.acl_check_cmd and not redis.acl_check_cmd(cmd, key, ...) then
    fail('NOPERM this user has no permission to run ' .. cmd .. ' on the key ' .. key)
  end
end
-- A script's first write, for a key it did not check: if the write fails (the key has the
-- wrong type, the user may not change it, maxmemory), nothing has been written yet. An ACL
-- denial names the key, as may() does (Redis 7+; Redis words the denial "... can't access at
-- least one of the keys ...", Valkey 8 "... No permissions to access a key"); any other error
-- is the server's own (the failed command, sent again, fails the same way).
local function first_write(cmd, key, ...)
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    if redis.acl_check_cmd and (string.find(reply.err, "can't access", 1, true)
        or string.find(reply.err, 'No permissions to access a key', 1, true)) then
      fail('NOPERM this user has no permission to run ' .. cmd .. ' on the key ' .. key)
    end
    return redis.call(cmd, key, ...)
  end
  return reply
end
-- Ask the ACL about the change of sorted set `key` with `cmd` (ZADD or ZREM) for `id` (first,
-- so that a denial names the key), and read the set.
local function check_change(cmd, key, id)
  if cmd == 'ZADD' then may(cmd, key, '0', id) else may(cmd, key, id) end
  redis.call('ZSCORE', key, id)
end
-- check_change once per key and command in a run.
local changing = {}
local function will_change(cmd, key, id)
  local seen = changing[cmd]
  if not seen then
    seen = {}
    changing[cmd] = seen
  elseif seen[key] then
    return
  end
  seen[key] = true
  check_change(cmd, key, id)
end
-- The scores of `members` in `key` (false where absent), with ZMSCORE in chunks.
local function scores(key, members)
  if #members == 1 then return {redis.call('ZSCORE', key, members[1])} end
  if #members <= 1000 then return redis.call('ZMSCORE', key, unpack(members)) end
  local found = {}
  for i = 1, #members, 1000 do
    local got = redis.call('ZMSCORE', key, unpack(members, i, math.min(i + 999, #members)))
    for j = 1, #got do found[i + j - 1] = got[j] end
  end
  return found
end
-- Index writes gathered during a run, then sent as one ZREM and one ZADD per key (in chunks)
-- instead of one per device. For a run that writes one device (`devices` <= 1) gathering
-- would cost more than it saves: each write is sent at once, the first with first_write (so a
-- script may leave unchecked the key its first index write changes).
local function new_writes(devices)
  if devices <= 1 then return {direct = true, first = true} end
  return {direct = false, adds = {}, add_keys = {}, rems = {}, rem_keys = {}}
end
local function gather(lists, keys, key)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
    keys[#keys + 1] = key
  end
  return list
end
-- A write sent at once (`w` direct): the run's first with first_write.
local function direct(w, cmd, key, ...)
  if w.first then
    w.first = false
    return first_write(cmd, key, ...)
  end
  return redis.call(cmd, key, ...)
end
local function zadd(w, key, score, id)
  if w.direct then return direct(w, 'ZADD', key, score, id) end
  local list = gather(w.adds, w.add_keys, key)
  list[#list + 1] = score
  list[#list + 1] = id
end
local function zrem(w, key, id)
  if w.direct then return direct(w, 'ZREM', key, id) end
  local list = gather(w.rems, w.rem_keys, key)
  list[#list + 1] = id
end
local function send(w)
  if w.direct then return end
  for _, key in ipairs(w.rem_keys) do
    local list = w.rems[key]
    for i = 1, #list, 1000 do redis.call('ZREM', key, unpack(list, i, math.min(i + 999, #list))) end
  end
  for _, key in ipairs(w.add_keys) do
    local list = w.adds[key]
    for i = 1, #list, 2000 do redis.call('ZADD', key, unpack(list, i, math.min(i + 1999, #list))) end
  end
end
local function check_fixed_keys()
  redis.call('ZSCORE', KEYS[1], '')
  redis.call('ZSCORE', KEYS[2], '')
  redis.call('HLEN', KEYS[3])
  redis.call('ZSCORE', KEYS[4], '')
  redis.call('ZSCORE', KEYS[5], '')
end
-- Remove every index entry of `id` (into the writes `w`); `number` is its datatype number
-- (false: none known).
-- The entry in the time index comes first, so that it can be a script's first write.
local function unindex(w, id, number)
  if number then zrem(w, time_key(number), id) end
  zrem(w, KEYS[1], id)
  zrem(w, KEYS[2], id)
  zrem(w, KEYS[4], id)
  zrem(w, KEYS[5], id)
end
-- The reading half of removing expired entries: up to `limit` of them whose key is gone (but
-- none in `skip`), each as {id, its datatype number or false}.
local function expired_entries(now, limit, skip)
  local found = {}
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('(%d', now), 'LIMIT',
    0, limit)
  for _, id in ipairs(ids) do
    if not skip[id] and not alive(id) then
      local number = placed(id)
      if number then will_change('ZREM', time_key(number), id) else number = false end
      found[#found + 1] = {id, number}
    end
  end
  return found
end
-- The writing half (into the writes `w`).
local function remove_entries(w, entries)
  for _, e in ipairs(entries) do unindex(w, e[1], e[2]) end
end
-- The number of datatype `dt`, or a new one to give it (then `fresh` is true). `numbers` (from
-- new_numbers()) keeps them for one script run, the new ones in `numbers.fresh`.
local function new_numbers()
  return {known = {}, fresh = {}, next = nil}
end
-- The number the bucket gave datatype `dt` (nil: none yet).
local function stored_number(dt)
  local number = redis.call('HGET', KEYS[3], dt)
  if number then return tonumber(number) end
  return nil
end
local function number_of(numbers, dt)
  local known = numbers.known[dt]
  if known then return known[1], known[2] end
  local number = stored_number(dt)
  local fresh = false
  if not number then
    if not numbers.next then numbers.next = redis.call('HLEN', KEYS[3]) end
    numbers.next = numbers.next + 1
    number, fresh = numbers.next, true
    numbers.fresh[dt] = number
  end
  numbers.known[dt] = {number, fresh}
  return number, fresh
end
-- Record the new datatype numbers of a run.
local function save_numbers(numbers)
  for dt, number in pairs(numbers.fresh) do redis.call('HSET', KEYS[3], dt, number) end
end
-- Whether a conditional put of `value` (index score `score`) is to be skipped: its key `key`
-- holds a value indexed at `stored` (its by-time score; false: not indexed) with a last_updated
-- (whole milliseconds: score = ms * 2 + persist) at least as new. False: write (nothing stored,
-- or an older value; a value nobody indexed counts as older); 'same': the stored value is byte
-- for byte `value` (this very update, stored already: by an attempt of the same put whose reply
-- was lost, when the client retries); true: newer, or as new and different. Only a value of the
-- same millisecond is read.
local function not_newer(key, stored, score, value)
  if not stored or redis.call('EXISTS', key) == 0 then return false end
  local have, want = math.floor(tonumber(stored) / 2), math.floor(tonumber(score) / 2)
  if have < want then return false end
  -- pcall: a key of another type is not the same (and is not this script's to fail on).
  if have == want and redis.pcall('GET', key) == value then return 'same' end
  return true
end
-- Write a device's value, to expire at `at` ms (0: never; `at_text`: `at` as text).
local function set_value(key, value, at, at_text)
  if at > 0 then
    redis.call('SET', key, value, 'PXAT', at_text)
  else
    redis.call('SET', key, value)
  end
end
-- A whole number as ZADD reads it, cached (several entries share a score): entries that go to
-- ZADD as text save the server formatting a Lua number for each.
local score_texts = {}
local function score_text(x)
  local t = score_texts[x]
  if not t then
    t = string.format('%d', x)
    score_texts[x] = t
  end
  return t
end
-- Gather one device's entries into the writes `w`: its id, number (of its datatype), old (the
-- number it had, or false), score (the text the client sent) and expiry `at` (0: none), and the
-- scores of its entries now in the ids, by-type and by-time indexes (false where absent), so
-- that only the entries that change are written.
-- The entry in the time index of `number` comes first (where it changes), so that it can be a
-- script's first write (see first_write).
local function add_entries(w, id, number, old, score, in_ids, part, at_time, at)
  local value = tonumber(score)
  local persist = value % 2
  local moved = old ~= number or tonumber(at_time) ~= value
  if moved then zadd(w, time_key(number), score, id) end
  if tonumber(in_ids) ~= persist then zadd(w, KEYS[1], score_text(persist), id) end
  local placed_at = number * 2 + persist
  if tonumber(part) ~= placed_at then zadd(w, KEYS[4], score_text(placed_at), id) end
  if moved then
    zadd(w, KEYS[5], score, id)
    if old and old ~= number then zrem(w, time_key(old), id) end
  end
  if at > 0 then
    zadd(w, KEYS[2], score_text(at), id)
  else
    zrem(w, KEYS[2], id)
  end
end
-- Byte-wise a < b, as Redis orders members. Lua's own < follows the server's collation
-- locale: byte-wise under the C locale (then it is used here), not under the others, which
-- put "a" before "B".
local bytewise = ('B' < 'a') and ('~' < '\128')
local function bytes_lt(a, b)
  if bytewise then return a < b end
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
-- Append the ids of `ids` whose key exists to `out` (and, `with_values`, their values to
-- `values`), checked with one MGET.
local function keep_live(ids, out, values, with_values)
  if #ids == 0 then return end
  local got, live = read_values(ids, #ids)
  for j, id in ipairs(ids) do
    if live[j] then
      out[#out + 1] = id
      if with_values then values[#values + 1] = got[j] end
    end
  end
end
-- A score bound as the client sends it ('-inf', '+inf' or a number).
local function score_bound(x)
  if x == '-inf' then return -math.huge end
  if x == '+inf' then return math.huge end
  return tonumber(x)
end
local function alive_count(now)
  return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf',
    string.format('(%d', now))
end
-- The first rank in [first, last) of sorted set `key` whose member is greater than `x` (when
-- `after`) or not less, where ranks [first, last) hold members of one score `score`, ordered
-- by bytes. O(log N): the member itself when it is there, else a binary search.
local function rank_in_block(key, first, last, score, x, after)
  local s = redis.call('ZSCORE', key, x)
  if s and tonumber(s) == score then
    local r = redis.call('ZRANK', key, x)
    if after then return r + 1 end
    return r
  end
  while first < last do
    local mid = math.floor((first + last) / 2)
    local member = redis.call('ZRANGE', key, mid, mid)[1]
    if bytes_lt(member, x) then first = mid + 1 else last = mid end
  end
  return first
end
-- Ranks [first, last) of the members of sorted set `key` with score `score` (a whole number).
-- The bound goes to ZCOUNT as exact text: Lua turns a number into text with `%.14g` (so does
-- redis.call with a number argument), which rounds scores of 15 digits or more (a last_updated
-- after the year 3554 or before 386).
local function block(key, score)
  local text = string.format('%d', score)
  return redis.call('ZCOUNT', key, '-inf', '(' .. text), redis.call('ZCOUNT', key, '-inf', text)
end
-- A rank range [start, stop) of `key` as its members in walk order, at most `count` of them
-- from the walk's start; and whether the range goes on beyond them.
local function window(key, start, stop, count, reverse, withscores)
  if stop <= start then return {}, false end
  local from, to = start, math.min(stop, start + count) - 1
  if reverse then from, to = math.max(start, stop - count), stop - 1 end
  local got
  if withscores then
    got = redis.call('ZRANGE', key, from, to, 'WITHSCORES')
  else
    got = redis.call('ZRANGE', key, from, to)
  end
  if reverse then
    local step = withscores and 2 or 1
    local flipped = {}
    for i = #got - step + 1, 1, -step do
      for j = 0, step - 1 do flipped[#flipped + 1] = got[i + j] end
    end
    got = flipped
  end
  return got, (to - from + 1) < (stop - start)
end
