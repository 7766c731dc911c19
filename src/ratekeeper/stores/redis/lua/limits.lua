-- One decision over every limit of a rule, all-or-nothing.
-- KEYS: one state key per limit.
-- ARGV: now ('' = server TIME), cost, and the rule packed as little-endian doubles:
--       write (1 hit, 0 peek), extra TTL in ms, then amount, per, capacity of each limit.
-- Reply: 5 items per limit: allowed (0/1), remaining, reset_after, retry_after, delay.
-- On denial the limits that would have passed are described without this request's cost.
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS
local rule = { unpack_('<' .. string.rep('d', 2 + 3 * n), ARGV[3]) }
local states, news, reply = {}, {}, {}
local allowed = true
for i = 1, n do
  local state = redis.call('GET', KEYS[i])
  states[i] = state
  local new, ok, remaining, reset, retry, delay =
    apply(state, now, cost, rule[3 * i], rule[3 * i + 1], rule[3 * i + 2])
  news[i] = new
  local r = 5 * i - 4
  reply[r], reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] =
    ok, remaining, num(reset), num(retry), num(delay)
  if ok == 0 then allowed = false end
end
if allowed then
  if rule[1] == 1 then
    for i = 1, n do
      local new = news[i]
      if new then
        local ttl = ceil(horizon(rule[3 * i], rule[3 * i + 1], rule[3 * i + 2]) * 1000) + rule[2]
        redis.call('SET', KEYS[i], new, 'PX', ttl)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
else
  for i = 1, n do
    local r = 5 * i - 4
    if reply[r] == 1 then
      local _, ok, remaining, reset, retry, delay =
        apply(states[i], now, 0, rule[3 * i], rule[3 * i + 1], rule[3 * i + 2])
      reply[r], reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] =
        ok, remaining, num(reset), num(retry), num(delay)
    end
  end
end
return reply
