--[[
  Moves one entry that failed too often to the stage's dead-letter stream, with its last
  error and delivery count, then acks it. Nothing happens when it was acked meanwhile.
  KEYS[1] input stream, KEYS[2] dead-letter stream, KEYS[3] errors hash of the stage
  ARGV[1] group, ARGV[2] entry id, ARGV[3] deliveries, ARGV[4] stage, ARGV[5] input stream name
  Returns 1 when dead-lettered, 0 otherwise.
]]
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then
  -- Trimmed away cannot happen for an unacked entry; if it did, ack so it stops circulating.
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return 0 end
local err = redis.call('HGET', KEYS[3], ARGV[2]) or 'no error recorded (consumer died or timed out repeatedly)'
local fields = entry[1][2]
local payload = ''
local tags = ''
for i = 1, #fields, 2 do
  if fields[i] == 'd' then payload = fields[i + 1] end
  if fields[i] == 't' then tags = fields[i + 1] end
end
redis.call('XADD', KEYS[2], '*', 'd', payload, 't', tags, 'source', ARGV[5], 'source_id', ARGV[2],
  'stage', ARGV[4], 'deliveries', ARGV[3], 'error', err)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
