--[[
  Splits a block that was delivered too often (its consumer kept dying or failing on it) into
  single entries appended to the same stream, then acks the block: a block never goes to the
  dead letters whole, its events go on alone and only the one at fault ends there (each single
  entry gets its own deliveries). The single entries name the group ('g'): the other groups of
  the stream applied the block and ack them unhandled. Nothing happens when the block was acked
  meanwhile.
  KEYS[1] input stream, KEYS[2] errors hash of the stage
  ARGV[1] group, ARGV[2] block entry id, then per event: payload, tags ('' when none)
  Returns the number of single entries appended (0 when the block was not pending).
]]
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return 0 end
local err = redis.call('HGET', KEYS[2], ARGV[2]) or 'its block was delivered too often (consumer died or timed out repeatedly)'
local n = 0
for i = 3, #ARGV, 2 do
  local id
  if ARGV[i + 1] ~= '' then
    id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i], 't', ARGV[i + 1], 'g', ARGV[1])
  else
    id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i], 'g', ARGV[1])
  end
  redis.call('HSET', KEYS[2], id, err)
  n = n + 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return n
