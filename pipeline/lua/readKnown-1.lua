--[[
  A consumer group's next entries, as XREADGROUP GROUP group consumer COUNT count STREAMS key >
  gives them (never blocking), but without the fields of the entries the caller holds decoded
  already (another group of its process read them: pipeline/shared-reads.ts). The entries go to
  the consumer's pending list as with XREADGROUP. The groups after the ledger each read every
  ledgered block; this way one of them carries its bytes.
  KEYS[1] stream. ARGV: group, consumer, count, known_from, known_to ('' for none), then the ids
  the caller holds, ascending (none, or any number).
  Returns per entry {id} (its fields left out) or {id, fields}; or, when ids held were given but
  none of them comes next for the group, 0: nothing was read, and the caller reads with a plain
  XREADGROUP (the entries it needs next are not held, so their bytes must come to it anyway, and
  a plain read sends them without copying them into Lua first).

  When the group's next entries are the first of the ids held, one after another in the stream
  (no other entry between them: an exclusive XRANGE between two ids finds none), they are handed
  over by id alone: XCLAIM ... FORCE JUSTID puts them in the consumer's pending list as a first
  delivery (RETRYCOUNT 1) and XGROUP SETID moves the group past them with its entries-read counter
  (which the group's lag, and so backpressure, is read from). No byte of them crosses into Lua: an
  XREADGROUP here copies every field of every entry into a Lua string, which cost Redis about a
  millisecond per read of ten ledgered blocks (BENCHMARKS.md, forty-fifth session). Otherwise
  (the group is behind what is held, past it, or its counter is unknown) the reply is 0. Without
  ids held, the read is an XREADGROUP that leaves out the fields of the entries in
  [known_from, known_to].
]]
local stream, group, consumer, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local FIRST_HELD = 6

-- The group's last delivered id and entries-read counter (false when Redis does not know it).
local function groupPosition()
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return nil end
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then return info['last-delivered-id'], info['entries-read'] end
  end
  return nil
end

-- The held ids that come next for the group, one after another in the stream, at most count.
local function nextHeld(last)
  local prevMs, prevSeq = splitId(last)
  local i = FIRST_HELD
  while i <= #ARGV do
    local ms, seq = splitId(ARGV[i])
    if idBefore(prevMs, prevSeq, ms, seq) then break end
    i = i + 1
  end
  local run, prev = {}, last
  while i <= #ARGV and #run < count do
    local id = ARGV[i]
    local ms, seq = splitId(id)
    if not idBefore(prevMs, prevSeq, ms, seq) then break end
    if #redis.call('XRANGE', stream, '(' .. prev, '(' .. id, 'COUNT', 1) > 0 then break end
    run[#run + 1] = id
    prev, prevMs, prevSeq = id, ms, seq
    i = i + 1
  end
  return run
end

if #ARGV >= FIRST_HELD then
  local last, entriesRead = groupPosition()
  if last and entriesRead then
    local run = nextHeld(last)
    if #run > 0 then
      local claim = { 'XCLAIM', stream, group, consumer, 0 }
      for k = 1, #run do claim[#claim + 1] = run[k] end
      claim[#claim + 1] = 'RETRYCOUNT'
      claim[#claim + 1] = 1
      claim[#claim + 1] = 'FORCE'
      claim[#claim + 1] = 'JUSTID'
      local claimed = redis.call(unpack(claim))
      -- An id held that is not in the stream (never the case for ids read from it and not yet
      -- read by this group) is passed over, and the group is never moved past the last entry
      -- claimed: an entry added later with a lower id than a stray one is still read.
      if #claimed == 0 then return 0 end
      if #claimed == #run then
        redis.call('XGROUP', 'SETID', stream, group, claimed[#claimed], 'ENTRIESREAD', entriesRead + #run)
      else
        -- The counter can no longer be told exactly: the next call reads plainly, and XREADGROUP sets it.
        redis.call('XGROUP', 'SETID', stream, group, claimed[#claimed])
      end
      local reply = {}
      for k = 1, #claimed do reply[k] = { claimed[k] } end
      return reply
    end
  end
  return 0
end

local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
if not reply then return {} end
local entries = reply[1][2]
if ARGV[4] == '' then return entries end

local fromMs, fromSeq = splitId(ARGV[4])
local toMs, toSeq = splitId(ARGV[5])
for i = 1, #entries do
  local ms, seq = splitId(entries[i][1])
  if idBefore(toMs, toSeq, ms, seq) then break end
  if not idBefore(ms, seq, fromMs, fromSeq) then entries[i] = { entries[i][1] } end
end
return entries
