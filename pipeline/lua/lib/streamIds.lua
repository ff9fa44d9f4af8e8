--[[
  Stream entry ids ('<ms>-<seq>'), compared as Redis orders them, shared by readKnown-1.lua and
  trimAcked-1.lua (this file is put before each of them when they are loaded). Both parts are
  compared as numbers: as strings, '9-0' would sort after '10-0'.
]]
local function splitId(id)
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  return tonumber(ms), tonumber(seq)
end

-- True when the id (ams, aseq) comes before the id (bms, bseq) in the stream.
local function idBefore(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
