--[[
  Moves one entry that failed too often to the stage's dead-letter stream, with its last
  error and delivery count, then acks it. Nothing happens when it was acked meanwhile.
  The dead letter keeps every payload field of the entry as it was (pipeline/blocks.ts): `d`
  of a single event, or `b` and `o` of a block (one that could not be decoded, or split, goes
  whole), its tags `t`, and `g` when the entry was for one group only; `npm run dlq -- replay`
  puts them back byte for byte. An entry with neither `d` nor `b` gets `d` ''.
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
local kept = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'd' or name == 'b' or name == 'o' or name == 't' or name == 'g' then kept[name] = fields[i + 1] end
end
-- In a fixed order: `d` (or `b` and `o`), `t` (always, '' when none), then `g` when given.
local args = {}
if kept['d'] ~= nil or kept['b'] == nil then
  args[#args + 1] = 'd'
  args[#args + 1] = kept['d'] or ''
end
for _, name in ipairs({ 'b', 'o' }) do
  if kept[name] ~= nil then
    args[#args + 1] = name
    args[#args + 1] = kept[name]
  end
end
args[#args + 1] = 't'
args[#args + 1] = kept['t'] or ''
if kept['g'] ~= nil then
  args[#args + 1] = 'g'
  args[#args + 1] = kept['g']
end
for _, value in ipairs({ 'source', ARGV[5], 'source_id', ARGV[2], 'stage', ARGV[4], 'deliveries', ARGV[3], 'error', err }) do
  args[#args + 1] = value
end
-- unpack last: in any other place Lua keeps only its first value.
redis.call('XADD', KEYS[2], '*', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
