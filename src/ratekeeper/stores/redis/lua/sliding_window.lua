-- Sliding window counter. State: k, previous, current (three doubles).
local function reset_after(start, per, now, prev, cur)
  if cur ~= 0 then return start + 2 * per - now end
  if prev ~= 0 then return start + per - now end
  return 0.0
end

local function apply(state, now, cost, amount, per, capacity)
  local t = now + EPS_TIME
  local k = floordiv(t, per)
  local prev, cur = 0.0, 0.0
  if state then
    local sk, sprev, scur = unpack_('<ddd', state)
    if sk == k then
      prev, cur = sprev, scur
    elseif sk == k - 1 then
      prev = scur
    elseif sk > k then -- the clock stepped back: keep the newer windows, weight them fully
      k, prev, cur = sk, sprev, scur
    end
  end
  local start = k * per
  local elapsed = min(max(t - start, 0.0), per)
  local weight = 1.0 - elapsed / per -- of the previous window's count
  local available = amount - (prev * weight + cur) + EPS_UNITS
  if cost <= available or cost == 0 then
    cur = cur + cost
    return pack('<ddd', k, prev, cur), 1, units_left(amount - (prev * weight + cur) + EPS_UNITS),
      reset_after(start, per, now, prev, cur), 0, 0
  end
  local retry
  if cost > amount then
    retry = INF
  elseif prev ~= 0 and cur + cost <= amount then -- wait here until the previous one has decayed
    retry = start + per * (1.0 - (amount - cur - cost) / prev) - now
  else -- wait into the next window, where the current count decays
    retry = start + per + per * (1.0 - (amount - cost) / cur) - now
  end
  return nil, 0, units_left(available), reset_after(start, per, now, prev, cur), max(retry, 0.0), 0
end

local function horizon(amount, per, capacity)
  return 2 * per
end
