--[[
  Step 1 of a move between partitions, whose keys live in different hash slots (on a Redis
  Cluster, on different nodes: no script may touch both). Appends entries to a stream of the
  target partition, each at most once: an entry is appended only when its marker key (in the
  target's slot, named after the origin of the block it comes from) is not set yet, and the
  marker is set in the same step, expiring after ARGV[1] seconds. The caller acks the source
  in the source's own slot afterwards (step 2): a crash in between leaves the source pending,
  it is delivered again, and step 1 then finds the markers and appends nothing twice.
  KEYS[1]   target stream
  KEYS[2..] one marker key per entry, in order
  ARGV[1]   marker ttl in seconds
  then per entry: nFields, field, value, ...
  Returns one element per entry: the new entry's id, or false when it had been appended before.
]]
local ttl = ARGV[1]
local result = {}
local pos = 2
for i = 2, #KEYS do
  local n = tonumber(ARGV[pos])
  if n == nil or n < 2 or n % 2 ~= 0 then return redis.error_reply('forwardOnce: malformed arguments at entry ' .. (i - 1)) end
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    result[i - 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, pos + 1, pos + n))
  else
    result[i - 1] = false
  end
  pos = pos + n + 1
end
return result
