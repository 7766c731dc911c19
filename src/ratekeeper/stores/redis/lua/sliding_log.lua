-- Sliding log. State: (time, cost) entries as pairs of doubles, oldest first (an empty log is
-- never stored: the key is deleted instead).
local function by_time(x, y)
  return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
end

local function apply(state, now, cost, amount, per, capacity)
  local cutoff = now + EPS_TIME - per -- entries at or before the cutoff have left the window
  local entries, raw = {}, {}
  local used = 0
  local newest = nil
  if state then
    local sub = string.sub
    for pos = 1, #state - 15, 16 do
      local when, spent = unpack_('<dd', state, pos)
      if when > cutoff then
        entries[#entries + 1] = { when, spent }
        raw[#raw + 1] = sub(state, pos, pos + 15)
        used = used + spent
        if newest == nil or when > newest then newest = when end
      end
    end
  end
  if used + cost <= amount then
    if cost ~= 0 then
      raw[#raw + 1] = pack('<dd', now, cost)
      if newest == nil or now > newest then newest = now end
    end
    local reset = 0.0
    if newest ~= nil then reset = newest + per - now end
    local new = false
    if #raw > 0 then new = table.concat(raw) end
    return new, 1, trunc(amount - used - cost + 1e-9), reset, 0, 0
  end
  local retry = 0.0
  if cost > amount then
    retry = INF
  else
    local freed = used + cost - amount -- this much must leave the window first
    table.sort(entries, by_time)
    for i = 1, #entries do
      freed = freed - entries[i][2]
      if freed <= 1e-9 then
        retry = entries[i][1] + per - now
        break
      end
    end
  end
  local reset = 0.0
  if newest ~= nil then reset = newest + per - now end
  return nil, 0, max(trunc(amount - used + 1e-9), 0), reset, max(retry, 0.0), 0
end

local function horizon(amount, per, capacity)
  return per
end
