-- GCRA and leaky bucket (SHAPING is defined before this chunk). State: the TAT (a double).
local function apply(state, now, cost, amount, per, capacity)
  local interval = per / amount
  local window = capacity * interval
  local backlog = 0.0
  if state then
    local tat = unpack_('<d', state)
    if tat > now then backlog = tat - now end
  end
  local after = backlog + cost * interval
  if after <= window + EPS_TIME then
    local remaining = trunc((window - after) / interval + 1e-9)
    local delay = 0.0
    if SHAPING then delay = backlog end
    return pack('<d', now + after), 1, max(remaining, 0), after, 0, delay
  end
  local retry = INF
  if cost <= capacity then retry = after - window end
  local remaining = trunc((window - backlog) / interval + 1e-9)
  return nil, 0, remaining, backlog, retry, 0
end

local function horizon(amount, per, capacity)
  return capacity * (per / amount)
end
