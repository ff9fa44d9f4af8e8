--[[
  Admission: answers one or more "may this caller act now?" requests of one partition in one
  step, and records what an admitted request uses (a slot of its rate window, its session, its
  reservations). Knows nothing of billing: flags, sliding windows, bounded sets and budgets.

  KEYS[1]   any key of the partition (its hash tag routes the call; every key below shares it,
            BullMQ-style: names travel in ARGV and derived keys are built here by suffix)
  ARGV[1]   now (epoch ms)
  ARGV[2]   number of requests
  ARGV[3..] one per request: a JSON array of strings (decoded by cjson, in C: one argument per
            request instead of about 35 keeps the caller's encoding and Redis's parsing cheap).
            What is the same on every call of one caller comes first (the caller encodes it once),
            what changes per call last:
    nFlags, nFlags x flagKey
    rateKey|'', rateLimit|'', rateWindowMs
    sessionsKey|'', sessionsMax|'', sessionMember|'', sessionIdleMs
    nBudgets, nBudgets x (counterKey, limit, hard (1|0), overrideKey|'', window|'')
    rateMember, estimate|'', reservationId, reservationTtlMs, grant, reservationOwner|'' (optional)
  A budget's reservations live beside its counter: counterKey..':rz' (ZSET id -> expiry ms),
  counterKey..':ra' (HASH id -> amount), counterKey..':rs' (their sum), counterKey..':ro' (HASH
  id -> who reserved it, when the caller names one: releaseReservations-1.lua releases a
  reservation for that owner only). Amounts and totals are
  decimal strings compared exactly (a Lua number is a double: not exact past 2^53).
  A budget with a window ('bucketMs:nBuckets') is a rolling total (lib/window.lua, put before
  this file): the buckets that left the window are taken out before it is read.

  Checks, in order, for each request; the first that fails answers and nothing is written:
    a flag is set                                  -> 'flag', its value
    rateLimit entries within the last window       -> 'rate', ms until a slot frees
    sessionsMax other sessions seen within idle    -> 'sessions', the number active
    hard budget: spent + reserved + estimate > limit (no override key) -> 'budget', its index
  Admitted: 'ok'; the window gets rateMember, the session is touched, and with an estimate each
  budget gets a reservation that expires after reservationTtlMs unless released earlier.
  A grant above 1 (never with an estimate) admits up to that many requests at once, for the caller
  to answer from memory (a lease, pipeline/admission-leases.ts): as many as the rate window still
  holds, each with a member of its own in it (rateMember..':'..i, i from 0), every one counted now.
  Reply: one JSON text (cjson, in C: one bulk string for the caller to parse, not ten replies per
  request), an array with per request [ verdict, detail, rateUsed, sessionsActive, granted, spent1,
  reserved1, freesAt1, spent2, ... ] (amounts as decimal strings, counts and times as numbers;
  granted is how many were admitted, 0 when refused).
  freesAt (rolling budgets, else 0): when spent + reserved + max(estimate, 1) fits under the limit
  as old buckets leave (when the oldest leaves if it fits already; 0 when nothing is counted).
]]
local now = tonumber(ARGV[1])
local count = tonumber(ARGV[2])

local function isDigits(text)
  return text ~= nil and string.match(text, '^%d+$') ~= nil
end

-- A counter below zero (a duplicate taken back before its first count) counts as nothing spent.
local function nonNegative(text)
  if text == false or text == nil or not isDigits(text) then return '0' end
  local stripped = string.gsub(text, '^0+', '')
  return stripped == '' and '0' or stripped
end

local function compare(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- Sum of two non-negative decimal strings, exact.
local function add(a, b)
  local result, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local digit = carry + (i > 0 and tonumber(string.sub(a, i, i)) or 0) + (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    result[#result + 1] = tostring(digit % 10)
    carry = math.floor(digit / 10)
    i, j = i - 1, j - 1
  end
  return nonNegative(string.reverse(table.concat(result)))
end

-- Drops the expired reservations of a budget (a bounded number per call) and returns their sum
-- left; `total` is the sum as read (false when it does not exist).
local function reservedOf(counterKey, total)
  local zset, amounts, sum = counterKey .. ':rz', counterKey .. ':ra', counterKey .. ':rs'
  -- No sum, no live reservation: the three keys are made and extended together (and a DECRBY
  -- here would leave a negative sum without a TTL).
  if not total then return '0' end
  local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, 64)
  if #expired == 0 then return nonNegative(total) end
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', amounts, id)
    if amount then redis.call('DECRBY', sum, amount) end
    redis.call('HDEL', amounts, id)
    redis.call('HDEL', counterKey .. ':ro', id)
    redis.call('ZREM', zset, id)
  end
  return nonNegative(redis.call('GET', sum))
end

local function extend(key, ttlMs)
  local left = redis.call('PTTL', key)
  if left >= 0 and left < ttlMs then redis.call('PEXPIRE', key, ttlMs) end
end

local replies = {}
for r = 1, count do
  local ok, a = pcall(cjson.decode, ARGV[2 + r])
  if not ok or type(a) ~= 'table' then
    return redis.error_reply('authorize: malformed arguments at request ' .. r)
  end
  local pos = 1
  local request = {}
  local nFlags = tonumber(a[pos]); pos = pos + 1
  request.flags = {}
  for f = 1, (nFlags or 0) do request.flags[f] = a[pos]; pos = pos + 1 end
  request.rateKey, request.rateLimit, request.rateWindow = a[pos], a[pos + 1], tonumber(a[pos + 2])
  pos = pos + 3
  request.sessionsKey, request.sessionsMax, request.session, request.sessionIdle = a[pos], a[pos + 1], a[pos + 2], tonumber(a[pos + 3])
  pos = pos + 4
  local nBudgets = tonumber(a[pos]); pos = pos + 1
  request.budgets = {}
  for b = 1, (nBudgets or 0) do
    request.budgets[b] = { key = a[pos], limit = a[pos + 1], hard = a[pos + 2] == '1', override = a[pos + 3], window = windowSpec(a[pos + 4]) }
    pos = pos + 5
  end
  request.rateMember, request.estimate, request.reservationId, request.reservationTtl = a[pos], a[pos + 1], a[pos + 2], tonumber(a[pos + 3])
  request.grant = tonumber(a[pos + 4])
  request.reservationOwner = a[pos + 5] or ''
  if nFlags == nil or nBudgets == nil or request.reservationTtl == nil or request.grant == nil or request.grant < 1 then
    return redis.error_reply('authorize: malformed arguments at request ' .. r)
  end

  local verdict, detail = 'ok', ''

  -- The flags, and each budget's total and reservation sum, in one MGET (rolling totals are
  -- brought up to now first).
  local keys = {}
  for f = 1, nFlags do keys[f] = request.flags[f] end
  for _, budget in ipairs(request.budgets) do
    if budget.window then windowPrune(budget.key, budget.window, now) end
    keys[#keys + 1] = budget.key
    keys[#keys + 1] = budget.key .. ':rs'
  end
  local values = #keys > 0 and redis.call('MGET', unpack(keys)) or {}
  for f = 1, nFlags do
    if values[f] then verdict, detail = 'flag', values[f]; break end
  end

  local rateUsed = 0
  if request.rateKey ~= '' then
    redis.call('ZREMRANGEBYSCORE', request.rateKey, '-inf', now - request.rateWindow)
    rateUsed = redis.call('ZCARD', request.rateKey)
    if verdict == 'ok' and request.rateLimit ~= '' and rateUsed >= tonumber(request.rateLimit) then
      local oldest = redis.call('ZRANGE', request.rateKey, 0, 0, 'WITHSCORES')
      verdict, detail = 'rate', tostring(math.max(1, tonumber(oldest[2]) + request.rateWindow - now))
    end
  end

  local sessionsActive = 0
  if request.sessionsKey ~= '' then
    redis.call('ZREMRANGEBYSCORE', request.sessionsKey, '-inf', now - request.sessionIdle)
    sessionsActive = redis.call('ZCARD', request.sessionsKey)
    -- Only a full set needs to know whether this session is in it already.
    if verdict == 'ok' and request.session ~= '' and request.sessionsMax ~= '' and sessionsActive >= tonumber(request.sessionsMax)
      and redis.call('ZSCORE', request.sessionsKey, request.session) == false then
      verdict, detail = 'sessions', tostring(sessionsActive)
    end
  end

  local reply = { '', '', rateUsed, sessionsActive, 0 }
  local estimate = request.estimate ~= '' and nonNegative(request.estimate) or nil
  for b, budget in ipairs(request.budgets) do
    budget.spent = nonNegative(values[nFlags + 2 * b - 1])
    budget.reserved = reservedOf(budget.key, values[nFlags + 2 * b])
    reply[#reply + 1] = budget.spent
    reply[#reply + 1] = budget.reserved
    reply[#reply + 1] = 0
    if verdict == 'ok' and estimate and budget.hard
      and (budget.override == '' or redis.call('EXISTS', budget.override) == 0)
      and compare(add(add(budget.spent, budget.reserved), estimate), budget.limit) > 0 then
      verdict, detail = 'budget', tostring(b)
    end
    if budget.window then
      local asked = add(budget.reserved, estimate or '1')
      reply[#reply] = windowFreesAt(budget.key, budget.window, function(left) return compare(add(nonNegative(left), asked), budget.limit) <= 0 end) or 0
    end
  end

  if verdict == 'ok' then
    local granted = 1
    if request.grant > 1 and not estimate then
      granted = request.grant
      if request.rateKey ~= '' and request.rateLimit ~= '' then granted = math.min(granted, tonumber(request.rateLimit) - rateUsed) end
    end
    reply[5] = granted
    if request.rateKey ~= '' and request.rateLimit ~= '' then
      if request.grant > 1 then
        local members = {}
        for i = 0, granted - 1 do
          members[#members + 1] = now
          members[#members + 1] = request.rateMember .. ':' .. i
        end
        redis.call('ZADD', request.rateKey, unpack(members))
      else
        redis.call('ZADD', request.rateKey, now, request.rateMember)
      end
      redis.call('PEXPIRE', request.rateKey, request.rateWindow)
      reply[3] = rateUsed + 1
    end
    if request.sessionsKey ~= '' and request.session ~= '' then
      -- ZADD counts what it added: 1 for a session not in the set yet.
      reply[4] = sessionsActive + redis.call('ZADD', request.sessionsKey, now, request.session)
      redis.call('PEXPIRE', request.sessionsKey, request.sessionIdle)
    end
    if estimate and estimate ~= '0' then
      for b, budget in ipairs(request.budgets) do
        local zset, amounts, sum, owners = budget.key .. ':rz', budget.key .. ':ra', budget.key .. ':rs', budget.key .. ':ro'
        local previous = redis.call('HGET', amounts, request.reservationId)
        if previous then redis.call('DECRBY', sum, previous) end
        redis.call('ZADD', zset, now + request.reservationTtl, request.reservationId)
        redis.call('HSET', amounts, request.reservationId, estimate)
        redis.call('INCRBY', sum, estimate)
        local held = { zset, amounts, sum }
        if request.reservationOwner ~= '' then
          redis.call('HSET', owners, request.reservationId, request.reservationOwner)
          held[4] = owners
        else
          redis.call('HDEL', owners, request.reservationId)
        end
        for _, key in ipairs(held) do
          if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, request.reservationTtl) else extend(key, request.reservationTtl) end
        end
        reply[4 + b * 3] = add(budget.reserved, estimate)
      end
    end
  end
  reply[1], reply[2] = verdict, detail
  replies[r] = reply
end
return cjson.encode(replies)
