-- Concurrency lease: give ARGV[2]'s slot of KEYS[1] back, dropping expired leases too.
-- ARGV: now ('' = server TIME), lease_id.
local now = clock(ARGV[1])
local data = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #data, 2 do
  if data[i] == ARGV[2] or tonumber(data[i + 1]) <= now then gone[#gone + 1] = data[i] end
end
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[1], unpack(gone, i, math.min(i + 999, #gone)))
end
return 0
