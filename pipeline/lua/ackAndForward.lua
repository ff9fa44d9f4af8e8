--[[
  Acknowledges a batch and forwards each input's outputs only when its XACK returned 1, so a
  batch redelivered after someone else acked it forwards nothing. Counter effects (spend
  totals) are applied in the same step, once per acked input.

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
  over the limit; the input that first crosses it also sets the flag key.
  Returns one element per input: false when not acked (already acked elsewhere), otherwise
  the comma-joined tags of the limits it crossed ('' when none).
]]
local group = ARGV[1]
local count = tonumber(ARGV[2])
local pos = 3
local result = {}
for i = 1, count do
  local id = ARGV[pos]
  local clearError = ARGV[pos + 1]
  local nOut = tonumber(ARGV[pos + 2])
  local nCounters = tonumber(ARGV[pos + 3])
  local outStart = pos + 4
  local counterStart = outStart + nOut * 2
  pos = counterStart + nCounters * 8
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    if clearError == '1' then redis.call('HDEL', KEYS[2], id) end
    local tags = {}
    local crossed = {}
    for c = 0, nCounters - 1 do
      local p = counterStart + c * 8
      local key = KEYS[tonumber(ARGV[p])]
      local by = tonumber(ARGV[p + 1])
      local total = redis.call('INCRBY', key, ARGV[p + 1])
      local ttl = tonumber(ARGV[p + 2])
      if ttl > 0 then redis.call('EXPIRE', key, ttl, 'NX') end
      if ARGV[p + 3] ~= '' then
        local limit = tonumber(ARGV[p + 3])
        if total >= limit then
          tags[#tags + 1] = ARGV[p + 4]
          if total - by < limit then
            crossed[#crossed + 1] = ARGV[p + 4]
            if ARGV[p + 5] ~= '' then
              redis.call('SET', KEYS[tonumber(ARGV[p + 5])], ARGV[p + 6], 'EX', ARGV[p + 7])
            end
          end
        end
      end
    end
    local tagField = table.concat(tags, ',')
    for o = 0, nOut - 1 do
      local p = outStart + o * 2
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
