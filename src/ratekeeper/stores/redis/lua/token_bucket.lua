-- Token bucket. State: tokens, last (two doubles).
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
  if cost <= tokens + rate * EPS_TIME then
    tokens = max(tokens - cost, 0.0)
    return pack('<dd', tokens, last), 1, trunc(tokens + 1e-9), (capacity - tokens) / rate, 0, 0
  end
  local retry = INF
  if cost <= capacity then retry = (cost - tokens) / rate end
  return nil, 0, trunc(tokens + 1e-9), (capacity - tokens) / rate, retry, 0
end

local function horizon(amount, per, capacity)
  return capacity / (amount / per)
end
