--[[
  Reads rolling totals (lib/window.lua, put before this file) as they stand at `now`: the
  buckets that left the window are taken out first, so the total is exact.
  KEYS[1]   any key of the partition (routes the call; every key below shares its hash tag)
  ARGV[1]   now (epoch ms)
  ARGV[2]   number of totals, then that many (key, window 'bucketMs:nBuckets', limit|'')
  Returns per total { total, freesAt }: freesAt is when the total is under the limit again as
  old buckets leave (when the oldest leaves if it is under already; 0 when nothing is counted).
]]
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local replies = {}
for i = 0, n - 1 do
  local key, spec, limit = ARGV[3 + i * 3], windowSpec(ARGV[4 + i * 3]), ARGV[5 + i * 3]
  if spec == nil then return redis.error_reply('windowTotals: bad window at ' .. (i + 1)) end
  windowPrune(key, spec, now)
  local total = redis.call('GET', key) or '0'
  local freesAt = 0
  if limit ~= '' then
    freesAt = windowFreesAt(key, spec, function(left) return windowCompare(left, limit) < 0 end) or 0
  end
  replies[i + 1] = { total, freesAt }
end
return replies
