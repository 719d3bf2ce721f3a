-- The info script (cache_service_client.repository.redis.lua.INFO).
-- ARGV[3]: most entries to examine from each end of the by-time index in this call.
-- ARGV[4], ARGV[5]: the (score, id) of the by-time entry to go on after from the low end ('' or
-- none: from the lowest entry; score 'done': do not search this end); ARGV[6], ARGV[7]: the
-- same for the high end (going on before it).
-- Returns {count, lowest live score or false, highest live score or false, where to go on from
-- the low end or false, the same for the high end}: an end whose budget ran out before a live
-- entry or the end of the index answers false and the (score, id) of the last entry it
-- examined (the client calls again from there, so that each call stays bounded).
unversioned()
local now = now_ms()
local function live(id)
  local at = redis.call('ZSCORE', KEYS[2], id)
  if at and tonumber(at) < now then return false end
  return alive(id)
end
-- The first live score from one end, or false and where to go on from (false: the end).
local function first_live(reverse, resume_score, resume_id)
  if resume_score == 'done' then return false, false end
  local key = KEYS[5]
  local budget = tonumber(ARGV[3])
  local start, stop = 0, redis.call('ZCARD', key)
  if resume_score and resume_score ~= '' then
    local score = tonumber(resume_score)
    local first, last = block(key, score)
    local r = rank_in_block(key, first, last, score, resume_id, not reverse)
    if reverse then stop = r else start = r end
  end
  while budget > 0 do
    local got, more = window(key, start, stop, math.min(16, budget), reverse, true)
    if #got == 0 then return false, false end
    for i = 1, #got, 2 do
      budget = budget - 1
      if live(got[i]) then return string.format('%d', tonumber(got[i + 1])), false end
    end
    if not more then return false, false end
    local n = #got / 2
    if reverse then stop = stop - n else start = start + n end
    if budget <= 0 then return false, {got[#got], got[#got - 1]} end
  end
  return false, false
end
local low, low_next = first_live(false, ARGV[4], ARGV[5])
local high, high_next = first_live(true, ARGV[6], ARGV[7])
return {alive_count(now), low, high, low_next, high_next}
