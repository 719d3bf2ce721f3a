-- The range script (cache_service_client.repository.redis.lua.RANGE).
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
