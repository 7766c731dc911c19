-- GCRA and leaky bucket (SHAPING is defined before this chunk). State: the TAT as an exact sum
-- of two doubles, high and low (low: what rounding high lost); an 8-byte state (one double, as
-- older versions wrote it) reads as low = 0.
local function backlog_of(high, low, now)
  local backlog = (high - now) + low
  if backlog > 0 then return backlog end
  return 0.0
end

local function apply(state, now, cost, amount, per, capacity)
  local interval = per / amount
  local backlog = 0.0
  if state then
    local high, low = 0.0, 0.0
    if #state == 8 then high = unpack_('<d', state) else high, low = unpack_('<dd', state) end
    backlog = backlog_of(high, low, now)
  end
  local slack = EPS_UNITS + min((amount / per) * abs(now) * EPS_CLOCK, MAX_CLOCK_SLACK)
  local available = (capacity - backlog / interval) + slack
  if cost <= available or cost == 0 then
    local after = backlog + cost * interval
    local high = now + after -- TwoSum: high + low is now + after exactly
    local part = high - now
    local low = (now - (high - part)) + (after - part)
    local left = (capacity - backlog_of(high, low, now) / interval) + slack
    local delay = 0.0
    if SHAPING then delay = backlog end
    return pack('<dd', high, low), 1, units_left(left), after, 0, delay
  end
  local retry = INF
  if cost <= capacity then retry = backlog + cost * interval - capacity * interval end
  return nil, 0, units_left(available), backlog, retry, 0
end

local function horizon(amount, per, capacity)
  return capacity * (per / amount)
end
