--[[
  Releases reservations that authorize-1.lua made, once what they stood for is counted (or
  will never come). Unknown ids are ignored, so a release is idempotent.
  KEYS[1]   any key of the partition (routes the call; every counter key shares its hash tag)
  ARGV[1]   number of releases, then that many (counterKey, reservationId, owner|'') triples
  An owner releases only a reservation recorded for that owner (counterKey..':ro', written by
  authorize-1.lua): another caller's, or one made without an owner, is left as if unknown. An
  empty owner (the event that settles the reservation) releases whoever made it.
  Returns the number of reservations released.
]]
local released = 0
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local counterKey, id, owner = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  local amounts, owners = counterKey .. ':ra', counterKey .. ':ro'
  local amount = redis.call('HGET', amounts, id)
  if amount and owner ~= '' and redis.call('HGET', owners, id) ~= owner then amount = false end
  if amount then
    redis.call('DECRBY', counterKey .. ':rs', amount)
    redis.call('HDEL', amounts, id)
    redis.call('HDEL', owners, id)
    redis.call('ZREM', counterKey .. ':rz', id)
    released = released + 1
  end
end
return released
