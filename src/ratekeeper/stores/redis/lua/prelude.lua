-- ratekeeper: shared helpers, a line-by-line port of ratekeeper.algorithms (same tolerances).
-- States and the floats of replies are packed little-endian doubles (struct): exact, and cheap
-- to read (Redis would truncate a Lua number reply to an integer). The lease scripts reply with
-- '%.17g' strings, which round-trip a double exactly too.
-- The float tolerances of ratekeeper.algorithms.base, same names and values (see there):
local EPS_TIME = 1e-6 -- seconds: window boundaries are placed at now + EPS_TIME
local EPS_UNITS = 1e-9 -- units: slack of every admission and of remaining
local EPS_CLOCK = 2 ^ -52 -- relative: a clock reading t is known to within |t| * EPS_CLOCK
local MAX_CLOCK_SLACK = 0.25 -- units: the most the clock adds to the slack
local INF = 1 / 0
local fmt = string.format
local floor, ceil, fmod, abs = math.floor, math.ceil, math.fmod, math.abs

local pack, unpack_ = struct.pack, struct.unpack

local min, max = math.min, math.max

-- remaining from what may be taken (Python: int(x) if x > 0 else 0).
local function units_left(x)
  if x > 0 then return floor(x) end
  return 0
end

-- The server's clock (TIME: seconds, microseconds), read at most once per script call: the
-- deadline guard and clock() share the reading.
local server_time_reply
local function server_time()
  if server_time_reply == nil then server_time_reply = redis.call('TIME') end
  return server_time_reply
end

-- ARGV[1]: the caller's clock, or '' to read the server's clock.
local function clock(arg)
  if arg == '' then
    local t = server_time()
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(arg)
end
