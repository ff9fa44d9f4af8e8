--[[
  Rolling windows, shared by ackAndForward.lua, authorize-1.lua and windowTotals-1.lua (this
  file is put before each of them when they are loaded: one place for the layout).

  A rolling total is the spend of the last nBuckets buckets of bucketMs each (the bucket of `now`
  included). It lives in two keys of one partition:
    key         a string, the exact sum of the live buckets (so it reads like any other counter)
    key..':w'   a hash: bucket index (floor(ms / bucketMs)) -> amount in it, and '_f', the oldest
                bucket index still counted (buckets below it have been taken out of key)
  Amounts move with INCRBY / HINCRBY / DECRBY: exact int64 arithmetic done by Redis, never a Lua
  double. Both keys expire a window after their last write, when all they hold has left it.
  A window spec travels as 'bucketMs:nBuckets' ('' for a counter that is not a window).
]]
local function windowSpec(text)
  if text == nil or text == '' then return nil end
  local bucketMs, n = string.match(text, '^(%d+):(%d+)$')
  if bucketMs == nil or tonumber(bucketMs) < 1 or tonumber(n) < 1 then return nil end
  return { bucketMs = tonumber(bucketMs), n = tonumber(n) }
end

-- Compares two decimal integer strings (optional leading '-'): -1, 0, 1.
local function windowCompare(a, b)
  local aneg, bneg = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if aneg ~= bneg then return aneg and -1 or 1 end
  local sign = aneg and -1 or 1
  if #a ~= #b then return (#a < #b and -1 or 1) * sign end
  if a == b then return 0 end
  return (a < b and -1 or 1) * sign
end

local function negated(amount)
  if string.sub(amount, 1, 1) == '-' then return string.sub(amount, 2) end
  if amount == '0' then return amount end
  return '-' .. amount
end

-- Takes the buckets that left the window by `now` out of key's total (once per bucket boundary).
local function windowPrune(key, spec, now)
  local buckets = key .. ':w'
  local floor = math.floor(now / spec.bucketMs) - spec.n + 1
  local pruned = tonumber(redis.call('HGET', buckets, '_f') or '')
  if pruned ~= nil and pruned >= floor then return end
  local fields = redis.call('HKEYS', buckets)
  if #fields == 0 then return end
  for _, field in ipairs(fields) do
    local index = tonumber(field)
    if index ~= nil and index < floor then
      local amount = redis.call('HGET', buckets, field)
      if not pcall(redis.call, 'INCRBY', key, negated(amount)) then redis.call('SET', key, '0', 'KEEPTTL') end
      redis.call('HDEL', buckets, field)
    end
  end
  redis.call('HSET', buckets, '_f', string.format('%d', floor))
end

-- Whether the bucket of `now` is still counted in key (a late take-back of spend that already left the window is not).
local function windowCounts(key, spec, now)
  local pruned = tonumber(redis.call('HGET', key .. ':w', '_f') or '')
  return pruned == nil or math.floor(now / spec.bucketMs) >= pruned
end

-- Adds `by` (a decimal string) to the bucket of `now`; the caller advances key itself.
local function windowAdd(key, spec, now, by)
  local buckets = key .. ':w'
  local index = string.format('%d', math.floor(now / spec.bucketMs))
  if not pcall(redis.call, 'HINCRBY', buckets, index, by) then redis.call('HSET', buckets, index, by) end
  local ttl = (spec.n + 1) * spec.bucketMs
  redis.call('PEXPIRE', key, ttl)
  redis.call('PEXPIRE', buckets, ttl)
end

--[[
  The earliest time (epoch ms) at which fits(total left) holds, taking buckets out oldest first
  as they leave the window (a bucket leaves at (index + nBuckets) * bucketMs). When it holds
  already: when the oldest live bucket leaves (false when there is none). The running total is
  kept in a scratch field ('_x') by HINCRBY so it stays exact; it is removed before returning.
]]
local function windowFreesAt(key, spec, fits)
  local buckets = key .. ':w'
  local indexes = {}
  for _, field in ipairs(redis.call('HKEYS', buckets)) do
    local index = tonumber(field)
    if index ~= nil then indexes[#indexes + 1] = index end
  end
  if #indexes == 0 then return false end
  table.sort(indexes)
  local total = redis.call('GET', key) or '0'
  if fits(total) then return (indexes[1] + spec.n) * spec.bucketMs end
  redis.call('HSET', buckets, '_x', total)
  local at = (indexes[#indexes] + spec.n) * spec.bucketMs
  for _, index in ipairs(indexes) do
    local amount = redis.call('HGET', buckets, string.format('%d', index))
    if amount and pcall(redis.call, 'HINCRBY', buckets, '_x', negated(amount)) then
      if fits(redis.call('HGET', buckets, '_x')) then
        at = (index + spec.n) * spec.bucketMs
        break
      end
    end
  end
  redis.call('HDEL', buckets, '_x')
  return at
end
