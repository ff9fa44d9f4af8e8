--[[
  Trims a stream below the oldest entry some consumer group still needs: for each group,
  its oldest pending entry, or its last delivered id when nothing is pending. A stream with
  no group yet is left alone (its consumers have not started; nothing may be lost).

  It also mends the lag Redis reports for a group that has read everything: after Redis loads
  its append-only file, a group's entries-read counter can come back short of the entries the
  group did read (Redis 7.0), and the lag it reports stays that much too high for ever; the
  backpressure reads that lag, and a phantom above the high-water mark would pause a stage for
  good. A group whose last delivered id is the stream's last id has no lag: its counter is set
  to the stream's entries-added.
  KEYS[1] stream. Returns the number of entries removed.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local stream = {}
local streamInfo = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #streamInfo, 2 do stream[streamInfo[i]] = streamInfo[i + 1] end
local keep = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['last-delivered-id'] == stream['last-generated-id'] and info['lag'] ~= 0 then
    redis.call('XGROUP', 'SETID', KEYS[1], info['name'], info['last-delivered-id'], 'ENTRIESREAD', stream['entries-added'])
  end
  local candidate = info['last-delivered-id']
  if info['pending'] > 0 then
    candidate = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  if keep == nil then
    keep = candidate
  else
    local cms, cseq = splitId(candidate)
    local kms, kseq = splitId(keep)
    if idBefore(cms, cseq, kms, kseq) then keep = candidate end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
