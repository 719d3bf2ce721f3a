-- Shared helpers, put in front of every script (see lua.py).
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
-- Write one device's entries: in its updated index `target`, ids, expiry (at = 0: none).
local function add_entries(id, target, score, at)
  redis.call('ZADD', target, score, id)
  redis.call('ZADD', KEYS[1], 0, id)
  if at > 0 then
    redis.call('ZADD', KEYS[2], at, id)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
-- Index one device: ids, expiry (at = 0: none) and the updated index of its datatype, moving
-- it out of another datatype's.
local function index(id, dt, score, at)
  local target = ARGV[2] .. dt
  if not redis.call('ZSCORE', target, id) then
    if redis.call('ZSCORE', KEYS[1], id) then drop_shard_entry(id) end
    if redis.call('SADD', KEYS[3], dt) == 1 then datatypes = nil end
  end
  add_entries(id, target, score, at)
end
