-- Concurrency lease: take one of ARGV[3] slots of KEYS[1] (a hash lease_id -> expiry).
-- ARGV: now ('' = server TIME), lease_id, limit, ttl seconds, extra TTL in ms.
-- Reply: '0' when granted, else the seconds until the earliest live lease expires.
local function f(x)
  return fmt('%.17g', x)
end

local now = clock(ARGV[1])
local lease_id, limit, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local data = redis.call('HGETALL', KEYS[1])
local live, expired = 0, {}
local earliest, latest = INF, now
for i = 1, #data, 2 do
  local id, expires = data[i], tonumber(data[i + 1])
  if expires <= now then
    expired[#expired + 1] = id
  elseif id ~= lease_id then
    live = live + 1
    earliest = min(earliest, expires)
    latest = max(latest, expires)
  end
end
if live < limit then
  for i = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
  end
  local expires = now + ttl
  redis.call('HSET', KEYS[1], lease_id, f(expires))
  redis.call('PEXPIRE', KEYS[1], ceil((max(latest, expires) - now) * 1000) + tonumber(ARGV[5]))
  return '0'
end
return f(max(earliest - now, 0.0))
