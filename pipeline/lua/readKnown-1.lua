--[[
  A consumer group's next entries, as XREADGROUP GROUP group consumer COUNT count STREAMS key >
  gives them (never blocking), but without the fields of the entries whose ids lie in
  [known_from, known_to]: the caller holds those decoded already (another group of its process
  read them: pipeline/shared-reads.ts). The entries go to the consumer's pending list as with
  XREADGROUP. The groups after the ledger each read every ledgered block; this way one of them
  carries its bytes.
  KEYS[1] stream. ARGV: group, consumer, count, known_from, known_to ('' for none).
  Returns per entry {id} (its fields left out) or {id, fields}.
]]
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
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
