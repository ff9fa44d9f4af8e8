--[[
  Releases reservations that authorize-1.lua made, once what they stood for is counted (or
  will never come). Unknown ids are ignored, so a release is idempotent.
  KEYS[1]   any key of the partition (routes the call; every counter key shares its hash tag)
  ARGV[1]   number of releases, then that many (counterKey, reservationId) pairs
  Returns the number of reservations released.
]]
local released = 0
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local counterKey, id = ARGV[2 + i * 2], ARGV[3 + i * 2]
  local amounts = counterKey .. ':ra'
  local amount = redis.call('HGET', amounts, id)
  if amount then
    redis.call('DECRBY', counterKey .. ':rs', amount)
    redis.call('HDEL', amounts, id)
    redis.call('ZREM', counterKey .. ':rz', id)
    released = released + 1
  end
end
return released
