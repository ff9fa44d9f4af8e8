--[[
  Acknowledges a batch and forwards each input's outputs only when its XACK returned 1, so a
  batch redelivered after someone else acked it forwards nothing. Counter effects (spend
  totals) are applied in the same step, once per acked input.

  Nothing may fail once an input is acked (a script is not rolled back: an error after XACK
  would lose the input). So every input is checked first, and one that does not check out is
  not acked at all: its reply is '!' and the reason, and it stays pending like any failed entry.
  Counters never fail either: an increment past the int64 range pins the counter at its bound
  (far beyond any cap, which is an int64 too) instead of raising an error.

  The number of keys varies with the batch, so it is passed at call time (not in the name).
  KEYS[1]   input stream
  KEYS[2]   errors hash of the stage (last error per pending entry)
  KEYS[3..] output streams, counter keys and limit-flag keys, referenced by index from ARGV
  ARGV[1]   consumer group
  ARGV[2]   number of inputs
  then per input:
    id, clearError (0|1), nOutputs, nCounters,
    nOutputs x (outputKeyIndex, payload),
    nCounters x (counterKeyIndex, by, ttlSeconds, limit|'', tag|'', flagKeyIndex|'', flagValue, flagTtlSeconds)
  A counter with a limit tags every output of its input with `tag` once the total is at or
  over the limit; the input that first crosses it also sets the flag key. Totals and limits are
  compared as decimal strings, exactly (a Lua number is a double: not exact past 2^53).
  Returns one element per input: false when not acked (already acked elsewhere), '!<reason>'
  when refused by the checks (not acked), otherwise the comma-joined tags of the limits it
  crossed ('' when none).
]]
local INT64_MAX = '9223372036854775807'
local INT64_MIN = '-9223372036854775808'

-- Compares two decimal integer strings (optional leading '-', no leading zeros but '0'): -1, 0, 1.
local function compare(a, b)
  local aneg, bneg = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if aneg ~= bneg then return aneg and -1 or 1 end
  local sign = aneg and -1 or 1
  if #a ~= #b then return (#a < #b and -1 or 1) * sign end
  if a == b then return 0 end
  return (a < b and -1 or 1) * sign
end

local function isInteger(text)
  return text ~= nil and (string.match(text, '^%-?[1-9]%d*$') ~= nil or text == '0')
end

local function isInt64(text)
  return isInteger(text) and compare(text, INT64_MIN) >= 0 and compare(text, INT64_MAX) <= 0
end

local function isKeyIndex(text)
  return text ~= nil and string.match(text, '^%d+$') ~= nil and KEYS[tonumber(text)] ~= nil
end

local group = ARGV[1]
local count = tonumber(ARGV[2])

-- Pass 1: parse and check every input before anything is acked.
local inputs = {}
local pos = 3
for i = 1, count do
  local input = { id = ARGV[pos], clearError = ARGV[pos + 1], nOut = tonumber(ARGV[pos + 2]), nCounters = tonumber(ARGV[pos + 3]) }
  if input.id == nil or input.nOut == nil or input.nCounters == nil then
    return redis.error_reply('ackAndForward: malformed arguments at input ' .. i)
  end
  input.outStart = pos + 4
  input.counterStart = input.outStart + input.nOut * 2
  pos = input.counterStart + input.nCounters * 8
  for o = 0, input.nOut - 1 do
    local p = input.outStart + o * 2
    if not isKeyIndex(ARGV[p]) or ARGV[p + 1] == nil then input.refused = 'output ' .. o .. ' is malformed' end
  end
  for c = 0, input.nCounters - 1 do
    local p = input.counterStart + c * 8
    if not isKeyIndex(ARGV[p]) then input.refused = 'counter ' .. c .. ' has no key'
    elseif not isInt64(ARGV[p + 1]) then input.refused = 'counter ' .. c .. ' increment ' .. tostring(ARGV[p + 1]) .. ' is not an int64'
    elseif tonumber(ARGV[p + 2]) == nil or tonumber(ARGV[p + 2]) < 0 then input.refused = 'counter ' .. c .. ' has a bad ttl'
    elseif ARGV[p + 3] ~= '' and not isInt64(ARGV[p + 3]) then input.refused = 'counter ' .. c .. ' limit is not an int64'
    elseif ARGV[p + 5] ~= '' and (not isKeyIndex(ARGV[p + 5]) or tonumber(ARGV[p + 7]) == nil or tonumber(ARGV[p + 7]) <= 0) then
      input.refused = 'counter ' .. c .. ' has a bad limit flag'
    end
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

-- Pass 2: ack, count, forward.
local result = {}
for i = 1, count do
  local input = inputs[i]
  if input.refused then
    result[i] = '!' .. input.refused
  elseif redis.call('XACK', KEYS[1], group, input.id) == 1 then
    if input.clearError == '1' then redis.call('HDEL', KEYS[2], input.id) end
    local tags = {}
    local crossed = {}
    for c = 0, input.nCounters - 1 do
      local p = input.counterStart + c * 8
      local key = KEYS[tonumber(ARGV[p])]
      local before, total = advance(key, ARGV[p + 1])
      local ttl = tonumber(ARGV[p + 2])
      if ttl > 0 then redis.call('EXPIRE', key, ttl, 'NX') end
      local limit = ARGV[p + 3]
      if limit ~= '' and compare(total, limit) >= 0 then
        tags[#tags + 1] = ARGV[p + 4]
        if compare(before, limit) < 0 then
          crossed[#crossed + 1] = ARGV[p + 4]
          if ARGV[p + 5] ~= '' then
            redis.call('SET', KEYS[tonumber(ARGV[p + 5])], ARGV[p + 6], 'EX', ARGV[p + 7])
          end
        end
      end
    end
    local tagField = table.concat(tags, ',')
    for o = 0, input.nOut - 1 do
      local p = input.outStart + o * 2
      if tagField ~= '' then
        redis.call('XADD', KEYS[tonumber(ARGV[p])], '*', 'd', ARGV[p + 1], 't', tagField)
      else
        redis.call('XADD', KEYS[tonumber(ARGV[p])], '*', 'd', ARGV[p + 1])
      end
    end
    result[i] = table.concat(crossed, ',')
  else
    result[i] = false
  end
end
return result
