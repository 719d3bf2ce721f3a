"""The server-side scripts that keep values and indexes consistent.

Every script takes the three index keys as ``KEYS[1..3]`` (ids, expiry, updated; see
:class:`~cache_service_client.KeyStrategy`). Device keys are ``KEYS[4..]`` where the script
writes them; where a script finds ids in an index it forms their keys from the device key prefix
passed in ``ARGV[1]`` (``KeyStrategy.device_key(id) == device_key_prefix + id``).

Expiry follows Redis: a key that expires at ``at`` ms is gone once the server time ``now > at``.
Values are written with ``PXAT`` and the same ``at`` goes into the expiry index, so index and
key agree to the millisecond. Readers prune index entries whose key is gone, lazily and in
bounded batches, so no read ever blocks the server for long.
"""

from __future__ import annotations

from cache_service_client.repository.redis.ops import LuaScript

__all__ = ["COUNT", "DELETE", "INFO", "PUT", "RANGE"]

# Shared helpers, put in front of the scripts that need them.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function unindex(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
-- Remove up to `limit` expired entries from the indexes (their keys are already gone).
local function prune_expired(prefix, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    if redis.call('EXISTS', prefix .. id) == 0 then unindex(id) end
  end
end
local function alive_count(now)
  return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
end
"""

PUT = LuaScript.of(
    "put",
    """
-- ARGV: ttl_ms, then (id, value, last_updated_ms) per device in KEYS[4..]
local ttl = tonumber(ARGV[1])
local at = 0
if ttl > 0 then
  local t = redis.call('TIME')
  at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
end
local n = #KEYS - 3
for i = 1, n do
  local id = ARGV[3 * i - 1]
  if ttl > 0 then
    redis.call('SET', KEYS[3 + i], ARGV[3 * i], 'PXAT', at)
    redis.call('ZADD', KEYS[2], at, id)
  else
    redis.call('SET', KEYS[3 + i], ARGV[3 * i])
    redis.call('ZREM', KEYS[2], id)
  end
  redis.call('ZADD', KEYS[1], 0, id)
  redis.call('ZADD', KEYS[3], ARGV[3 * i + 1], id)
end
return n
""",
)

DELETE = LuaScript.of(
    "delete",
    """
-- ARGV: the ids of the device keys in KEYS[4..]
local deleted = 0
for i = 1, #ARGV do
  deleted = deleted + redis.call('DEL', KEYS[3 + i])
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
return deleted
""",
)

RANGE = LuaScript.of(
    "range",
    _PRELUDE
    + """
-- ARGV: key prefix, lex start, lex stop, how many index entries to examine.
-- Returns {ids whose key exists, in order; the last id examined or false when the range ended}.
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local alive = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    alive[#alive + 1] = id
  else
    unindex(id)
  end
end
local last = false
if #ids == tonumber(ARGV[4]) then last = ids[#ids] end
return {alive, last}
""",
)

COUNT = LuaScript.of(
    "count",
    _PRELUDE
    + """
-- ARGV: key prefix, prune batch size
local now = now_ms()
prune_expired(ARGV[1], now, tonumber(ARGV[2]))
return alive_count(now)
""",
)

INFO = LuaScript.of(
    "info",
    _PRELUDE
    + """
-- ARGV: key prefix, prune batch size, most entries to examine from each end.
-- Returns {count, oldest last_updated ms or false, newest or false}.
local now = now_ms()
prune_expired(ARGV[1], now, tonumber(ARGV[2]))
local budget = tonumber(ARGV[3])
local function first_alive(reverse)
  local start = 0
  while budget > 0 do
    local batch
    if reverse then
      batch = redis.call('ZREVRANGE', KEYS[3], start, start + 15, 'WITHSCORES')
    else
      batch = redis.call('ZRANGE', KEYS[3], start, start + 15, 'WITHSCORES')
    end
    if #batch == 0 then return false end
    local dead = 0
    for i = 1, #batch, 2 do
      budget = budget - 1
      local id = batch[i]
      local at = redis.call('ZSCORE', KEYS[2], id)
      if (at == false or tonumber(at) >= now) and redis.call('EXISTS', ARGV[1] .. id) == 1 then
        return batch[i + 1]
      end
      if redis.call('EXISTS', ARGV[1] .. id) == 0 then
        unindex(id)
        dead = dead + 1
      end
    end
    start = start + 16 - dead
  end
  return false
end
return {alive_count(now), first_alive(false), first_alive(true)}
""",
)
