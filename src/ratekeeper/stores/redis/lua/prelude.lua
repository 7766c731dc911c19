-- ratekeeper: shared helpers, a line-by-line port of ratekeeper.algorithms (same tolerances).
-- States and the floats of replies are packed little-endian doubles (struct): exact, and cheap
-- to read (Redis would truncate a Lua number reply to an integer). The lease scripts reply with
-- '%.17g' strings, which round-trip a double exactly too.
local EPS_TIME = 1e-6
local INF = 1 / 0
local fmt = string.format
local floor, ceil, fmod = math.floor, math.ceil, math.fmod

local pack, unpack_ = struct.pack, struct.unpack

-- Python's int(x) for a float: truncation toward zero.
local function trunc(x)
  if x >= 0 then return floor(x) end
  return ceil(x)
end

local min, max = math.min, math.max

-- ARGV[1]: the caller's clock, or '' to read the server's clock.
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(arg)
end
