-- One decision over every limit of a rule, all-or-nothing.
-- KEYS: one state key per limit.
-- ARGV: now ('' = server TIME), cost, and the rule packed as little-endian doubles:
--       write (1 hit, 0 peek), extra TTL in ms, then amount, per, capacity of each limit.
-- Reply: 3 items per limit: allowed (0/1), remaining, and reset_after, retry_after, delay
-- packed as three little-endian doubles (exact, inf included; no decimal formatting).
-- On denial the limits that would have passed are described without this request's cost.
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS
local packed = ARGV[3]
if n == 1 then -- the common case, without the multi-limit bookkeeping
  local write, extra, amount, per, capacity = unpack_('<ddddd', packed)
  local new, ok, remaining, reset, retry, delay =
    apply(redis.call('GET', KEYS[1]), now, cost, amount, per, capacity)
  if ok == 1 and write == 1 then
    if new then
      local ttl = ceil(horizon(amount, per, capacity) * 1000) + extra
      redis.call('SET', KEYS[1], new, 'PX', ttl)
    else
      redis.call('DEL', KEYS[1])
    end
  end
  return { ok, remaining, pack('<ddd', reset, retry, delay) }
end
local write, extra = unpack_('<dd', packed)
local params = {}
local states, news, reply = {}, {}, {}
local allowed = true
for i = 1, n do
  local amount, per, capacity = unpack_('<ddd', packed, 24 * i - 7)
  params[i] = { amount, per, capacity }
  local state = redis.call('GET', KEYS[i])
  states[i] = state
  local new, ok, remaining, reset, retry, delay = apply(state, now, cost, amount, per, capacity)
  news[i] = new
  local r = 3 * i - 2
  reply[r], reply[r + 1], reply[r + 2] = ok, remaining, pack('<ddd', reset, retry, delay)
  if ok == 0 then allowed = false end
end
if allowed then
  if write == 1 then
    for i = 1, n do
      local new = news[i]
      if new then
        local p = params[i]
        local ttl = ceil(horizon(p[1], p[2], p[3]) * 1000) + extra
        redis.call('SET', KEYS[i], new, 'PX', ttl)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
else
  for i = 1, n do
    local r = 3 * i - 2
    if reply[r] == 1 then
      local p = params[i]
      local _, ok, remaining, reset, retry, delay = apply(states[i], now, 0, p[1], p[2], p[3])
      reply[r], reply[r + 1], reply[r + 2] = ok, remaining, pack('<ddd', reset, retry, delay)
    end
  end
end
return reply
