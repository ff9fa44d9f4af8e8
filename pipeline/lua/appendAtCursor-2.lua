--[[
  Appends blocks to a stream and moves the cursor of their source, in one step, only if the
  cursor is still where the caller read it: two processes exporting from the same source never
  append the same page twice, and the cursor never runs ahead of what was appended.
  KEYS[1] cursor key, KEYS[2] stream
  ARGV[1] expected cursor ('' when none yet), ARGV[2] the new cursor, ARGV[3..] blocks (field b:
  a msgpack array of events; the entry id is the block's origin)
  Returns the number of entries appended, or -1 when the cursor had moved (nothing done).
]]
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return -1 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[i])
end
redis.call('SET', KEYS[1], ARGV[2])
return #ARGV - 2
