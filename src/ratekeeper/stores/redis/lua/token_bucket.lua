-- Token bucket. State: tokens, last (two doubles). Tokens may dip below zero by the slack.
local function apply(state, now, cost, amount, per, capacity)
  local rate = amount / per
  local tokens, last
  if not state then
    tokens, last = capacity, now
  else
    tokens, last = unpack_('<dd', state)
    if now > last then
      tokens = min(capacity, tokens + (now - last) * rate)
      last = now
    end
  end
  local slack = EPS_UNITS + min(rate * abs(now) * EPS_CLOCK, MAX_CLOCK_SLACK)
  local available = tokens + slack
  if cost <= available or cost == 0 then
    tokens = tokens - cost
    return pack('<dd', tokens, last), 1, units_left(tokens + slack), (capacity - tokens) / rate, 0, 0
  end
  local retry = INF
  if cost <= capacity then retry = (cost - tokens) / rate end
  return nil, 0, units_left(available), (capacity - tokens) / rate, retry, 0
end

local function horizon(amount, per, capacity)
  return capacity / (amount / per)
end
