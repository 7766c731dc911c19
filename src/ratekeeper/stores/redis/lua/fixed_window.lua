-- Fixed window. State: k, count (two doubles).
local function apply(state, now, cost, amount, per, capacity)
  local k = floordiv(now + EPS_TIME, per)
  local count = 0.0
  if state then
    local sk, sc = unpack_('<dd', state)
    if sk == k then
      count = sc
    elseif sk > k then -- the clock stepped back: stay in the newer window
      k, count = sk, sc
    end
  end
  local ending = (k + 1) * per - now
  local reset = 0.0
  local available = amount - count + EPS_UNITS
  if cost <= available or cost == 0 then
    count = count + cost
    if count ~= 0 then reset = ending end
    return pack('<dd', k, count), 1, units_left(amount - count + EPS_UNITS), reset, 0, 0
  end
  if count ~= 0 then reset = ending end
  local retry = ending
  if cost > amount then retry = INF end
  return nil, 0, units_left(available), reset, retry, 0
end

local function horizon(amount, per, capacity)
  return per
end
