--[[
  Advances counters once per marker (a block of events, or one event): a marker is set with
  SET NX, and only the increments of the markers set by this call are applied, so a redelivery
  counts nothing. Each counter key comes once, with its increments summed per marker (the
  caller works out each event's running value from the values returned).
  KEYS      the markers (ARGV[1] of them), then the counters
  ARGV[1]   number of markers
  ARGV[2]   marker ttl (seconds)
  then per counter, in KEYS order, its operation:
    'add', ttl, n, then n (marker number, 1-based; increment): INCRBY the increment of each
           fresh marker (past the int64 range the counter is pinned at its max), then EXPIRE ttl
           when any of them is fresh
    'min', ttl, value: SET value EX ttl when the key is absent or holds a greater number
    'get'
  Returns { fresh, values... }: fresh, one character per marker ('1' set now, '0' already there);
  then per counter its value before this call (false when absent).
]]
local INT64_MAX = '9223372036854775807'
local markers = tonumber(ARGV[1])
local fresh, freshFlags = {}, {}
for m = 1, markers do
  fresh[m] = redis.call('SET', KEYS[m], '1', 'NX', 'EX', ARGV[2]) ~= false
  freshFlags[m] = fresh[m] and '1' or '0'
end
local reply = { table.concat(freshFlags) }
local a = 3
for k = markers + 1, #KEYS do
  local key, op = KEYS[k], ARGV[a]
  local before = redis.call('GET', key)
  reply[#reply + 1] = before
  if op == 'add' then
    local ttl, n = ARGV[a + 1], tonumber(ARGV[a + 2])
    local any = false
    for i = 0, n - 1 do
      if fresh[tonumber(ARGV[a + 3 + i * 2])] then
        any = true
        if not pcall(redis.call, 'INCRBY', key, ARGV[a + 4 + i * 2]) then redis.call('SET', key, INT64_MAX, 'KEEPTTL') end
      end
    end
    if any then redis.call('EXPIRE', key, ttl) end
    a = a + 3 + n * 2
  elseif op == 'min' then
    local value = ARGV[a + 2]
    if (not before) or tonumber(before) > tonumber(value) then redis.call('SET', key, value, 'EX', ARGV[a + 1]) end
    a = a + 3
  elseif op == 'get' then
    a = a + 1
  else
    return redis.error_reply('advanceOnce: unknown operation ' .. tostring(op) .. ' for counter ' .. (k - markers))
  end
end
return reply
