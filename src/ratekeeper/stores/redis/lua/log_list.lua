-- The sliding log as a list, for the checks script (checks.lua): ratekeeper.algorithms.
-- sliding_log's apply, charge and refund line by line on a flat list {time, cost, time, cost,
-- ...}, oldest first. The stored log (the layout of sliding_log.lua) is read whole and written
-- whole (header start 0, total and exact recomputed), so a check on a log of n records costs
-- O(n), where a plain hit on it reads only what it needs. Sums are taken oldest first; while
-- every cost is a whole number that is the exact total the hit script keeps.
local LOG_MAGIC, LOG_HEAD = 'RKL1', 24

local function log_read(raw) -- the records from the header's start on, or nil
  if not raw then return nil end
  local len = #raw
  if len < LOG_HEAD + 16 or (len - LOG_HEAD) % 16 ~= 0 then return nil end
  if string.sub(raw, 1, 4) ~= LOG_MAGIC then return nil end
  local start = unpack_('<I4', raw, 5)
  local n = (len - LOG_HEAD) / 16
  if start >= n then return nil end
  local log = {}
  for i = start, n - 1 do
    local when, spent = unpack_('<dd', raw, LOG_HEAD + 16 * i + 1)
    log[#log + 1] = when
    log[#log + 1] = spent
  end
  return log
end

local function log_write(log) -- the stored form, or nil for an empty log (deleted)
  if not log or #log == 0 then return nil end
  local exact, total = true, 0
  local records = {}
  for i = 1, #log, 2 do
    local spent = log[i + 1]
    if exact and spent == floor(spent) and spent - spent == 0 then total = total + spent else exact = false end
    records[#records + 1] = pack('<dd', log[i], spent)
  end
  if not exact then total = 0 end
  return LOG_MAGIC .. pack('<I4dd', 0, total, exact and 1 or 0) .. table.concat(records)
end

-- Where a record at time `when` goes (after equal times): its index in the flat list.
local function log_place(log, when)
  local lo, hi = 0, #log / 2
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if when < log[2 * mid + 1] then hi = mid else lo = mid + 1 end
  end
  return 2 * lo + 1
end

-- The records after the cutoff, a new list.
local function log_live(log, cutoff)
  local out = {}
  if log then
    for i = 1, #log, 2 do
      if log[i] > cutoff then
        out[#out + 1] = log[i]
        out[#out + 1] = log[i + 1]
      end
    end
  end
  return out
end

local function log_insert(log, when, spent)
  local at = log_place(log, when)
  table.insert(log, at, spent)
  table.insert(log, at, when)
end

local function log_apply(log, now, cost, amount, per, capacity)
  local live = log_live(log, now + EPS_TIME - per)
  local used = 0
  for i = 2, #live, 2 do used = used + live[i] end
  local available = amount - used + EPS_UNITS
  if cost <= available or cost == 0 then
    if cost ~= 0 then log_insert(live, now, cost) end
    local remaining = units_left(amount - (used + cost) + EPS_UNITS)
    if #live == 0 then return nil, 1, remaining, 0.0, 0, 0 end
    return live, 1, remaining, live[#live - 1] + per - now, 0, 0
  end
  local retry = 0.0
  if cost > amount then
    retry = INF
  else
    local freed = used + cost - amount -- this much must leave the window first
    for i = 1, #live, 2 do
      freed = freed - live[i + 1]
      if freed <= EPS_UNITS then
        retry = live[i] + per - now
        break
      end
    end
  end
  local reset = 0.0
  if #live > 0 then reset = live[#live - 1] + per - now end
  return nil, 0, units_left(available), reset, max(retry, 0.0), 0
end

local function log_charge(log, now, cost, amount, per, capacity)
  local live = log_live(log, now + EPS_TIME - per)
  if cost ~= 0 then log_insert(live, now, cost) end
  if #live == 0 then return nil end
  return live
end

local function log_refund(log, now, units, amount, per, capacity, at)
  if not log then return nil end
  for i = #log - 1, 1, -2 do -- the latest record charged at `at`
    local when = log[i]
    if when == at then
      local out = {}
      for j = 1, #log do out[j] = log[j] end
      local left = out[i + 1] - units
      if left > 0 then
        out[i + 1] = left
      else
        table.remove(out, i)
        table.remove(out, i)
        if #out == 0 then return nil end
      end
      return out
    end
    if when < at then break end
  end
  return log
end

ALGORITHMS.sliding_log = {
  apply = log_apply,
  charge = log_charge,
  refund = log_refund,
  read = log_read,
  write = log_write,
  horizon = function(amount, per, capacity) return per end,
}
