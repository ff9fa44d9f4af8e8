--[[
  For each stream in KEYS: the time (ms, from its entry id) of the oldest entry that one of its
  consumer groups has not acknowledged yet, whether read and pending or not yet read (0 when
  every group has acknowledged everything), and how many entries that group has not
  acknowledged (pending + not yet read; the most over the groups). Redis's own clock (ms) comes
  first, so the caller's ages do not depend on its clock. Read-only. Every key must be in one
  slot (one partition).

  Returns: { nowMs, oldestMs(KEYS[1]), waiting(KEYS[1]), ..., oldestMs(KEYS[n]), waiting(KEYS[n]) }
]]
local t = redis.call('TIME')
local out = { tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) }
for _, key in ipairs(KEYS) do
  local oldest = 0
  local waiting = 0
  if redis.call('TYPE', key)['ok'] == 'stream' then
    local groups = redis.call('XINFO', 'GROUPS', key)
    -- No group yet (its stage has not started): every entry waits, but there is no wait to judge yet.
    if #groups == 0 then waiting = redis.call('XLEN', key) end
    for _, group in ipairs(groups) do
      local info = {}
      for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
      local lag = tonumber(info['lag']) or redis.call('XLEN', key)
      waiting = math.max(waiting, lag + tonumber(info['pending']))
      local candidate
      if tonumber(info['pending']) > 0 then
        -- Pending entries were delivered before any unread one: the oldest pending is the oldest.
        candidate = redis.call('XPENDING', key, info['name'])[2]
      else
        local unread = redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
        if unread[1] then candidate = unread[1][1] end
      end
      if candidate then
        local ms = tonumber(string.match(candidate, '^(%d+)'))
        if oldest == 0 or ms < oldest then oldest = ms end
      end
    end
  end
  out[#out + 1] = oldest
  out[#out + 1] = waiting
end
return out
