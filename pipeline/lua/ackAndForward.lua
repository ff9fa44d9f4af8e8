--[[
  Acknowledges a batch of input entries (each a block of events, or a single event) and
  forwards each input's outputs only when its XACK returned 1, so an input redelivered after
  someone else acked it forwards nothing. Counter effects (spend totals) are applied in the
  same step, once per acked input, event by event in the block's order, so a limit is judged
  per event (the event that reaches it is the one that crosses it).

  Nothing may fail once an input is acked (a script is not rolled back: an error after XACK
  would lose the input). So every input is checked first, and one that does not check out is
  not acked at all: its reply is '!' and the reason, and it stays pending like any failed entry.
  Counters never fail either: an increment past the int64 range pins the counter at its bound
  (far beyond any cap, which is an int64 too) instead of raising an error.

  Outputs come in groups: one stream entry per group, a block ('b', with its origin 'o') of
  nEvents events, or a single entry ('d') when nEvents is 1. Tags set by counter limits are per
  event: a counted event names the (group, position) of each of its outputs, and a block's 't'
  field lists the tags of each of its events, joined by newlines.

  Retries are the events of an input that failed alone while the rest of their block went on
  (a block is split, never held back by one event): each is appended to the input stream as a
  single entry, with its last error in the errors hash, and goes the way of every failed entry
  (retried, dead-lettered after MAX_DELIVERIES). It names its group ('g'): the other groups of
  the stream applied it with its block, and ack it unhandled.

  The argument layout is built and the reply parsed by pipeline/ack.ts (same names).
  KEYS[1]   input stream
  KEYS[2]   errors hash of the stage (last error per pending entry)
  KEYS[3..] output streams, counter keys and limit-flag keys, referenced by index from ARGV
  ARGV[1]   consumer group
  ARGV[2]   number of inputs
  then per input:
    id, clearError (0|1), nGroups, nCounted, nRetries,
    nGroups x (groupKeyIndex, payload, nEvents, origin),
    nCounted x (nCounters, nRefs,
                nCounters x (counterKeyIndex, by, ttlSeconds, limit|'', tag|'', flagKeyIndex|'', flagValue, flagTtlSeconds,
                             window|'' (bucketMs:nBuckets:nowMs)),
                nRefs x (groupIndex, position)),
    nRetries x (payload, tags, reason)
  A counter with a limit tags every output of its event with `tag` once the total is at or
  over the limit; the event that first crosses it also sets the flag key and publishes its name
  on the sharded channel 'agentmeter:limit-flags:{tag}' (the flag key's hash tag). Totals and limits are
  compared as decimal strings, exactly (a Lua number is a double: not exact past 2^53).
  A counter with a window is a rolling total (lib/window.lua): buckets that left the window are
  taken out before the event is added to the bucket of nowMs, and a flag it sets lasts until
  enough of the spend has left the window for the total to be under the limit again; spend
  counted while the flag is set lengthens it the same way.
  Returns one element per input: false when not acked (already acked elsewhere), '!<reason>'
  when refused by the checks (not acked), otherwise, per counted event, the comma-joined tags
  of the limits it crossed, joined by newlines ('' when no event was counted).
]]
local INT64_MAX = '9223372036854775807'
local INT64_MIN = '-9223372036854775808'

-- Compares two decimal integer strings (optional leading '-', no leading zeros but '0'): -1, 0, 1.
-- lib/window.lua is loaded in front of this script (pipeline/scripts.ts) and holds it.
local compare = windowCompare

local function isInteger(text)
  return text ~= nil and (string.match(text, '^%-?[1-9]%d*$') ~= nil or text == '0')
end

local function isInt64(text)
  return isInteger(text) and compare(text, INT64_MIN) >= 0 and compare(text, INT64_MAX) <= 0
end

local function isKeyIndex(text)
  return text ~= nil and string.match(text, '^%d+$') ~= nil and KEYS[tonumber(text)] ~= nil
end

local function isCount(text)
  return text ~= nil and string.match(text, '^%d+$') ~= nil
end

local group = ARGV[1]
local count = tonumber(ARGV[2])

-- Pass 1: parse and check every input before anything is acked.
local inputs = {}
local pos = 3
for i = 1, count do
  local input = { id = ARGV[pos], clearError = ARGV[pos + 1] }
  if input.id == nil or not isCount(ARGV[pos + 2]) or not isCount(ARGV[pos + 3]) or not isCount(ARGV[pos + 4]) then
    return redis.error_reply('ackAndForward: malformed arguments at input ' .. i)
  end
  local nGroups, nCounted, nRetries = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3]), tonumber(ARGV[pos + 4])
  pos = pos + 5
  input.groups = {}
  for g = 1, nGroups do
    local nEvents = tonumber(ARGV[pos + 2])
    if not isKeyIndex(ARGV[pos]) or ARGV[pos + 1] == nil or nEvents == nil or nEvents < 1 or ARGV[pos + 3] == nil then
      input.refused = 'output group ' .. g .. ' is malformed'
      nEvents = 1
    end
    input.groups[g] = { key = ARGV[pos], payload = ARGV[pos + 1], nEvents = nEvents, origin = ARGV[pos + 3], tags = {} }
    pos = pos + 4
  end
  input.counted = {}
  for e = 1, nCounted do
    local nCounters, nRefs = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
    if nCounters == nil or nRefs == nil then
      return redis.error_reply('ackAndForward: malformed counted event at input ' .. i)
    end
    local event = { counterStart = pos + 2, nCounters = nCounters, refStart = pos + 2 + nCounters * 9, nRefs = nRefs }
    pos = event.refStart + nRefs * 2
    for c = 0, nCounters - 1 do
      local p = event.counterStart + c * 9
      if not isKeyIndex(ARGV[p]) then input.refused = 'counter ' .. c .. ' has no key'
      elseif not isInt64(ARGV[p + 1]) then input.refused = 'counter ' .. c .. ' increment ' .. tostring(ARGV[p + 1]) .. ' is not an int64'
      elseif tonumber(ARGV[p + 2]) == nil or tonumber(ARGV[p + 2]) < 0 then input.refused = 'counter ' .. c .. ' has a bad ttl'
      elseif ARGV[p + 3] ~= '' and not isInt64(ARGV[p + 3]) then input.refused = 'counter ' .. c .. ' limit is not an int64'
      elseif ARGV[p + 5] ~= '' and (not isKeyIndex(ARGV[p + 5]) or tonumber(ARGV[p + 7]) == nil or tonumber(ARGV[p + 7]) <= 0) then
        input.refused = 'counter ' .. c .. ' has a bad limit flag'
      elseif ARGV[p + 8] ~= '' and (string.match(ARGV[p + 8], '^%d+:%d+:%d+$') == nil or windowSpec(string.match(ARGV[p + 8], '^(%d+:%d+)')) == nil) then
        input.refused = 'counter ' .. c .. ' has a bad window'
      end
    end
    for r = 0, nRefs - 1 do
      local g, at = tonumber(ARGV[event.refStart + r * 2]), tonumber(ARGV[event.refStart + r * 2 + 1])
      if g == nil or input.groups[g] == nil or at == nil or at < 1 or at > input.groups[g].nEvents then
        input.refused = 'output reference ' .. r .. ' is malformed'
      end
    end
    input.counted[e] = event
  end
  input.retryStart = pos
  input.nRetries = nRetries
  pos = pos + nRetries * 3
  for r = 0, nRetries - 1 do
    if ARGV[input.retryStart + r * 3] == nil or ARGV[input.retryStart + r * 3 + 2] == nil then input.refused = 'retry ' .. r .. ' is malformed' end
  end
  inputs[i] = input
end

-- Adds `by` to a counter; past the int64 range the counter is pinned at the bound. Returns the
-- totals before and after, as exact decimal strings.
local function advance(key, by)
  local before = redis.call('GET', key) or '0'
  if not pcall(redis.call, 'INCRBY', key, by) then
    redis.call('SET', key, string.sub(by, 1, 1) == '-' and INT64_MIN or INT64_MAX, 'KEEPTTL')
  end
  return before, redis.call('GET', key)
end

-- Pass 2: ack, count, forward, split off the retries.
local result = {}
for i = 1, count do
  local input = inputs[i]
  if input.refused then
    result[i] = '!' .. input.refused
  elseif redis.call('XACK', KEYS[1], group, input.id) == 1 then
    if input.clearError == '1' then redis.call('HDEL', KEYS[2], input.id) end
    local crossedPerEvent = {}
    for e, event in ipairs(input.counted) do
      local tags = {}
      local crossed = {}
      for c = 0, event.nCounters - 1 do
        local p = event.counterStart + c * 9
        local key = KEYS[tonumber(ARGV[p])]
        local window, windowNow
        if ARGV[p + 8] ~= '' then
          window = windowSpec(string.match(ARGV[p + 8], '^(%d+:%d+)'))
          windowNow = tonumber(string.match(ARGV[p + 8], ':(%d+)$'))
          windowPrune(key, window, windowNow)
        end
        -- A take-back of spend whose bucket already left the window has nothing left to take back.
        local counts = window == nil or windowCounts(key, window, windowNow)
        local before, total
        if counts then
          before, total = advance(key, ARGV[p + 1])
        else
          before = redis.call('GET', key) or '0'
          total = before
        end
        local ttl = tonumber(ARGV[p + 2])
        if window then
          if counts then windowAdd(key, window, windowNow, ARGV[p + 1]) end
        elseif ttl > 0 then
          redis.call('EXPIRE', key, ttl, 'NX')
        end
        local limit = ARGV[p + 3]
        if limit ~= '' and compare(total, limit) >= 0 then
          tags[#tags + 1] = ARGV[p + 4]
          if compare(before, limit) < 0 then
            crossed[#crossed + 1] = ARGV[p + 4]
            if ARGV[p + 5] ~= '' and window then
              local limitOf = limit
              local freesAt = windowFreesAt(key, window, function(left) return compare(left, limitOf) < 0 end)
              redis.call('SET', KEYS[tonumber(ARGV[p + 5])], ARGV[p + 6], 'PX', math.max(1, (freesAt or windowNow) - windowNow))
            elseif ARGV[p + 5] ~= '' then
              redis.call('SET', KEYS[tonumber(ARGV[p + 5])], ARGV[p + 6], 'EX', ARGV[p + 7])
            end
            -- Announced in the same step, on the sharded channel of the flag's partition
            -- (limitFlagsChannel in pipeline/keys.ts): whoever answers from a lease
            -- (pipeline/admission-leases.ts) drops it as the message arrives.
            if ARGV[p + 5] ~= '' then
              local flagKey = KEYS[tonumber(ARGV[p + 5])]
              local open = string.find(flagKey, '{', 1, true)
              local close = open and string.find(flagKey, '}', open + 1, true)
              if close and close > open + 1 then
                redis.call('SPUBLISH', 'agentmeter:limit-flags:' .. string.sub(flagKey, open, close), flagKey)
              end
            end
          elseif counts and window and ARGV[p + 5] ~= '' then
            -- Spend counted while a rolling pause holds (in flight, or from callers that do not ask
            -- first) keeps the total over the limit longer: the flag lasts until it is under again.
            -- Only a flag still set is lengthened: one lifted by an admin stays lifted.
            local flagKey = KEYS[tonumber(ARGV[p + 5])]
            if redis.call('EXISTS', flagKey) == 1 then
              local limitOf = limit
              local freesAt = windowFreesAt(key, window, function(left) return compare(left, limitOf) < 0 end)
              redis.call('PEXPIRE', flagKey, math.max(1, (freesAt or windowNow) - windowNow), 'GT')
            end
          end
        end
      end
      if #tags > 0 then
        local tagField = table.concat(tags, ',')
        for r = 0, event.nRefs - 1 do
          local g = input.groups[tonumber(ARGV[event.refStart + r * 2])]
          g.tags[tonumber(ARGV[event.refStart + r * 2 + 1])] = tagField
          g.tagged = true
        end
      end
      crossedPerEvent[e] = table.concat(crossed, ',')
    end
    for _, g in ipairs(input.groups) do
      local key = KEYS[tonumber(g.key)]
      if g.nEvents == 1 then
        if g.tagged then
          redis.call('XADD', key, '*', 'd', g.payload, 't', g.tags[1])
        else
          redis.call('XADD', key, '*', 'd', g.payload)
        end
      elseif g.tagged then
        local perEvent = {}
        for p = 1, g.nEvents do perEvent[p] = g.tags[p] or '' end
        redis.call('XADD', key, '*', 'b', g.payload, 'o', g.origin, 't', table.concat(perEvent, '\n'))
      else
        redis.call('XADD', key, '*', 'b', g.payload, 'o', g.origin)
      end
    end
    for r = 0, input.nRetries - 1 do
      local p = input.retryStart + r * 3
      local id
      if ARGV[p + 1] ~= '' then
        id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[p], 't', ARGV[p + 1], 'g', ARGV[1])
      else
        id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[p], 'g', ARGV[1])
      end
      redis.call('HSET', KEYS[2], id, ARGV[p + 2])
    end
    result[i] = table.concat(crossedPerEvent, '\n')
  else
    result[i] = false
  end
end
return result
