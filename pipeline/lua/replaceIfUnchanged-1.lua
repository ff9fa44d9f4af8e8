--[[
  Sets a key to a new value, or deletes it, only while it still holds the value the caller read
  and judged: a compare-and-set for connections many callers share (where WATCH cannot be held).

  KEYS[1] the key
  ARGV[1] the value the caller read ('' when the key was absent)
  ARGV[2] the new value, or '' to delete the key
  ARGV[3] with a new value: when it expires, unix time in ms

  Returns 1 when the key was set or deleted, 0 when it holds another value than the one read.
]]
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
