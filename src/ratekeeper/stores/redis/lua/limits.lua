-- One decision over every limit of a rule, all-or-nothing.
-- KEYS: one state key per limit.
-- ARGV: now ('' = server TIME), cost, write ('1' hit, '0' peek), extra TTL in ms,
--       then amount, per, capacity of each limit.
-- Reply: 5 items per limit: allowed (0/1), remaining, reset_after, retry_after, delay
-- (floats as strings). On denial the limits that would have passed are described without
-- this request's cost.
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS
local states, news, params, reply = {}, {}, {}, {}
local allowed = true
for i = 1, n do
  local j = 2 + 3 * i
  local amount, per, capacity = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  params[i] = { amount, per, capacity }
  local state = redis.call('GET', KEYS[i])
  states[i] = state
  local new, ok, remaining, reset, retry, delay = apply(state, now, cost, amount, per, capacity)
  news[i] = new
  local r = 5 * i - 4
  reply[r], reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] =
    ok, remaining, f(reset), f(retry), f(delay)
  if ok == 0 then allowed = false end
end
if allowed then
  if ARGV[3] == '1' then
    local extra = tonumber(ARGV[4])
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
    local r = 5 * i - 4
    if reply[r] == 1 then
      local p = params[i]
      local _, ok, remaining, reset, retry, delay = apply(states[i], now, 0, p[1], p[2], p[3])
      reply[r], reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] =
        ok, remaining, f(reset), f(retry), f(delay)
    end
  end
end
return reply
