-- Each algorithm's charge and refund (ratekeeper.algorithms: `charge`, `refund`), line by line,
-- on the packed states of the limit scripts, for the checks script (checks.lua). A charge
-- consumes unconditionally (the budget may go into debt); a refund gives back units charged at
-- `at`: never past the full budget, for windows only while the window charged still counts.
-- Runs after the algorithms' chunks (ALGORITHMS) and floordiv.lua.

-- Token bucket: the bucket at now (the refill step of its apply).
local function refilled(state, now, amount, per, capacity)
  if not state then return capacity, now end
  local tokens, last = unpack_('<dd', state)
  if now > last then
    local full = tokens + (now - last) * (amount / per)
    if full < capacity then return full, now end
    return capacity, now
  end
  return tokens, last
end

ALGORITHMS.token_bucket.charge = function(state, now, cost, amount, per, capacity)
  local tokens, last = refilled(state, now, amount, per, capacity)
  return pack('<dd', tokens - cost, last)
end

ALGORITHMS.token_bucket.refund = function(state, now, units, amount, per, capacity, at)
  if not state then return nil end -- full: nothing to give back
  local tokens, last = refilled(state, now, amount, per, capacity)
  tokens = tokens + units
  if tokens < capacity then return pack('<dd', tokens, last) end
  return pack('<dd', capacity, last)
end

-- GCRA and leaky bucket: the backlog (max(TAT - now, 0)) and the TAT now + after (TwoSum).
local function backlog(state, now)
  if not state then return 0.0 end
  local high, low = 0.0, 0.0
  if #state == 8 then high = unpack_('<d', state) else high, low = unpack_('<dd', state) end
  local ahead = (high - now) + low
  if ahead > 0 then return ahead end
  return 0.0
end

local function tat(now, after)
  local high = now + after
  local part = high - now
  return pack('<dd', high, (now - (high - part)) + (after - part))
end

local function meter_charge(state, now, cost, amount, per, capacity)
  return tat(now, backlog(state, now) + cost * (per / amount))
end

local function meter_refund(state, now, units, amount, per, capacity, at)
  if not state then return nil end
  local ahead = backlog(state, now) - units * (per / amount)
  if ahead > 0 then return tat(now, ahead) end
  return tat(now, 0.0)
end

ALGORITHMS.gcra.charge, ALGORITHMS.gcra.refund = meter_charge, meter_refund
ALGORITHMS.leaky_bucket.charge, ALGORITHMS.leaky_bucket.refund = meter_charge, meter_refund

-- Fixed window. State: k, count.
ALGORITHMS.fixed_window.charge = function(state, now, cost, amount, per, capacity)
  local k = floordiv(now + EPS_TIME, per)
  if not state then return pack('<dd', k, cost) end
  local last, count = unpack_('<dd', state)
  if last > k then return pack('<dd', last, count + cost) end -- the clock stepped back
  if last == k then return pack('<dd', k, count + cost) end
  return pack('<dd', k, 0.0 + cost)
end

ALGORITHMS.fixed_window.refund = function(state, now, units, amount, per, capacity, at)
  if not state then return nil end
  local k, count = unpack_('<dd', state)
  if k ~= floordiv(at + EPS_TIME, per) then return state end -- the window charged has ended
  count = count - units
  if count > 0 then return pack('<dd', k, count) end
  return pack('<dd', k, 0.0)
end

-- Sliding window. State: k, previous, current.
ALGORITHMS.sliding_window.charge = function(state, now, cost, amount, per, capacity)
  local k = floordiv(now + EPS_TIME, per)
  local prev, cur = 0.0, 0.0
  if state then
    local sk, sprev, scur = unpack_('<ddd', state)
    if sk == k then
      prev, cur = sprev, scur
    elseif sk == k - 1 then
      prev = scur
    elseif sk > k then -- the clock stepped back: keep the newer windows
      k, prev, cur = sk, sprev, scur
    end
  end
  return pack('<ddd', k, prev, cur + cost)
end

ALGORITHMS.sliding_window.refund = function(state, now, units, amount, per, capacity, at)
  if not state then return nil end
  local k, prev, cur = unpack_('<ddd', state)
  local charged = floordiv(at + EPS_TIME, per)
  if k == charged then -- still the current window
    cur = cur - units
    if cur > 0 then return pack('<ddd', k, prev, cur) end
    return pack('<ddd', k, prev, 0.0)
  end
  if k == charged + 1 then -- now the previous window: it still counts, decaying
    prev = prev - units
    if prev > 0 then return pack('<ddd', k, prev, cur) end
    return pack('<ddd', k, 0.0, cur)
  end
  return state -- the window charged no longer counts
end
