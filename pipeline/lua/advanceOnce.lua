--[[
  Advances counters once per marker (a block of events, or one event): a marker is set with
  SET NX, and only the increments of the markers set by this call are applied, so a redelivery
  counts nothing. Each counter key comes once (the caller works out each event's running value
  from the values returned).
  KEYS      the markers (ARGV[1] of them), then the counters
  ARGV[1]   number of markers
  ARGV[2]   marker ttl (seconds)
  ARGV[3]   'total' or 'each': how an 'add' names its increments
  then per counter, in KEYS order, its operation:
    'add', ttl, then
        ('total') the sum of its increments: INCRBY it once. Only when no marker is set yet (no
                  redelivery: the common case); when one is, nothing is done and the reply is
                  { 'each' }: the caller sends the batch again in the 'each' form. A batch's
                  arguments then grow with its keys, not with its blocks.
        ('each')  n, then n (marker number, 1-based; increment): INCRBY the increment of each
                  fresh marker.
      Past the int64 range the counter is pinned at its max either way (the increments are not
      negative). The ttl is set when this call creates the counter, never renewed: a counter
      lives for a fixed time from its first increment, and a steady-state 'total' add is one
      command (INCRBY), not three.
    'min', ttl, value: SET value EX ttl when the key is absent or holds a greater number
    'get'
  Returns { fresh, values... }: fresh, one character per marker ('1' set now, '0' already there);
  then per counter:
    an 'add' in the 'total' form: its value after this call (an integer, or a string past 2^53,
      where a Lua number is no longer exact), or { its value before } when it was pinned;
    any other: its value before this call (false when absent).
]]
local INT64_MAX = '9223372036854775807'
-- The largest integer a Lua number (a double) holds exactly.
local EXACT_MAX = 9007199254740991
local markers = tonumber(ARGV[1])
local each = ARGV[3] == 'each'

-- INCRBY key by, pinned at the int64 max past its range. Returns the value after (a Lua number),
-- or nil and the value before when it had to be pinned.
local function add(key, by)
  local ok, after = pcall(redis.call, 'INCRBY', key, by)
  if ok then return after end
  local before = redis.call('GET', key)
  redis.call('SET', key, INT64_MAX, 'KEEPTTL')
  return nil, before
end

if not each then
  for m = 1, markers do
    if redis.call('EXISTS', KEYS[m]) == 1 then return { 'each' } end
  end
end
local fresh, freshFlags = {}, {}
for m = 1, markers do
  fresh[m] = redis.call('SET', KEYS[m], '1', 'NX', 'EX', ARGV[2]) ~= false
  freshFlags[m] = fresh[m] and '1' or '0'
end
local reply = { table.concat(freshFlags) }
local a = 4
for k = markers + 1, #KEYS do
  local key, op = KEYS[k], ARGV[a]
  if op == 'add' and not each then
    local by = ARGV[a + 2]
    local after, pinnedFrom = add(key, by)
    if after == nil then
      reply[#reply + 1] = { pinnedFrom }
    else
      -- after == by: created now, or a key that held 0 (NX: one that has its ttl keeps it).
      if after == tonumber(by) then redis.call('EXPIRE', key, ARGV[a + 1], 'NX') end
      if after > EXACT_MAX then after = redis.call('GET', key) end
      reply[#reply + 1] = after
    end
    a = a + 3
  elseif op == 'add' then
    local before = redis.call('GET', key)
    reply[#reply + 1] = before
    local ttl, n = ARGV[a + 1], tonumber(ARGV[a + 2])
    local any = false
    for i = 0, n - 1 do
      if fresh[tonumber(ARGV[a + 3 + i * 2])] then
        any = true
        add(key, ARGV[a + 4 + i * 2])
      end
    end
    if any and not before then redis.call('EXPIRE', key, ttl) end
    a = a + 3 + n * 2
  elseif op == 'min' then
    local before = redis.call('GET', key)
    reply[#reply + 1] = before
    local value = ARGV[a + 2]
    if (not before) or tonumber(before) > tonumber(value) then redis.call('SET', key, value, 'EX', ARGV[a + 1]) end
    a = a + 3
  elseif op == 'get' then
    reply[#reply + 1] = redis.call('GET', key)
    a = a + 1
  else
    return redis.error_reply('advanceOnce: unknown operation ' .. tostring(op) .. ' for counter ' .. (k - markers))
  end
end
return reply
