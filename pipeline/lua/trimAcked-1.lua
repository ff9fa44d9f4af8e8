--[[
  Trims a stream below the oldest entry some consumer group still needs: for each group,
  its oldest pending entry, or its last delivered id when nothing is pending. A stream with
  no group yet is left alone (its consumers have not started; nothing may be lost).
  KEYS[1] stream. Returns the number of entries removed.
]]
local function older(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams < bms end
  return tonumber(aseq) < tonumber(bseq)
end

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local keep = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local candidate = info['last-delivered-id']
  if info['pending'] > 0 then
    candidate = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  if keep == nil or older(candidate, keep) then keep = candidate end
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
