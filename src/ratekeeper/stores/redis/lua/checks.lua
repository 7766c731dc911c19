-- Several checks all-or-nothing (ratekeeper.algorithms.checks: step and evaluate_checks, line by
-- line). Runs after the algorithms (ALGORITHMS: apply, horizon, charge, refund, read, write).
-- KEYS: the distinct state keys (slots).
-- ARGV[1]: now ('' = server TIME).
-- ARGV[2]: packed little-endian doubles: mode (0 decide only, 1 decide and write, 2 describe:
--          decide only, and describe the items that pass without their cost, as after a denial),
--          extra TTL in ms, then per slot: algorithm (its index in ALGORITHM_NAMES), amount,
--          per, capacity.
-- ARGV[3]: packed doubles, per item (a check on one limit, in order): slot, cost, mode (0 hit,
--          1 charge, 2 refund), keep (units a priority share keeps back), at (refunds: when the
--          units were charged).
-- Reply: one string of packed doubles: per item allowed, remaining, reset_after, retry_after,
-- delay; then the time decided at. A denial writes nothing and describes the items that passed
-- without this request's cost; a state written is kept until it is replenished (a debt too).
local HIT, CHARGE = 0, 1

local function keep_state(A)
  return A.read or function(raw) return raw or nil end, A.write or function(state) return state end
end

-- One check on one limit: the new state (a denial returns the state given) and the decision.
local function step(A, state, now, cost, amount, per, capacity, mode, keep, at)
  local apply = A.apply
  if mode ~= HIT then
    local new
    if mode == CHARGE then
      new = A.charge(state, now, cost, amount, per, capacity)
    else
      new = A.refund(state, now, cost, amount, per, capacity, at)
    end
    local _, ok, remaining, reset, retry, delay = apply(new, now, 0, amount, per, capacity)
    return new, ok, remaining, reset, retry, delay
  end
  if keep == 0 then
    local new, ok, remaining, reset, retry, delay = apply(state, now, cost, amount, per, capacity)
    if ok == 0 then new = state end
    return new, ok, remaining, reset, retry, delay
  end
  if cost ~= 0 then
    local _, pok, _, preset, pretry = apply(state, now, cost + keep, amount, per, capacity)
    if pok == 0 then
      local _, rok, rleft = apply(state, now, keep, amount, per, capacity)
      if rok == 0 then rleft = 0 end
      return state, 0, rleft, preset, pretry, 0
    end
  end
  local new, ok, _, reset, retry, delay = apply(state, now, cost, amount, per, capacity)
  if ok == 0 then new = state end
  local _, rok, rleft = apply(new, now, keep, amount, per, capacity)
  if rok == 0 then rleft = 0 end
  return new, ok, rleft, reset, retry, delay
end

local now = clock(ARGV[1])
local head, items = ARGV[2], ARGV[3]
local mode, extra = unpack_('<dd', head)
local nslots, nitems = #KEYS, #items / 40
local algos, params, writers, olds, works, holds, dirty = {}, {}, {}, {}, {}, {}, {}
for j = 1, nslots do
  local a, amount, per, capacity = unpack_('<dddd', head, 17 + 32 * (j - 1))
  local A = ALGORITHMS[ALGORITHM_NAMES[a]]
  local read, write = keep_state(A)
  algos[j], params[j], writers[j] = A, { amount, per, capacity }, write
  olds[j] = read(redis.call('GET', KEYS[j]))
  works[j] = olds[j]
end
local slots, keeps, oks, rows = {}, {}, {}, {}
local allowed = true
for i = 1, nitems do
  local s, cost, kind, keep, at = unpack_('<ddddd', items, 40 * (i - 1) + 1)
  local p = params[s]
  local new, ok, remaining, reset, retry, delay =
    step(algos[s], works[s], now, cost, p[1], p[2], p[3], kind, keep, at)
  if ok == 1 then
    works[s], dirty[s] = new, true
    holds[s] = reset -- a state in debt is kept until it is repaid
  else
    allowed = false
  end
  slots[i], keeps[i], oks[i] = s, keep, ok
  rows[i] = pack('<ddddd', ok, remaining, reset, retry, delay)
end
if allowed and mode == 1 then
  for j = 1, nslots do
    if dirty[j] then
      local raw = writers[j](works[j])
      if raw then
        local p = params[j]
        local hold = max(algos[j].horizon(p[1], p[2], p[3]), holds[j])
        redis.call('SET', KEYS[j], raw, 'PX', ceil(hold * 1000) + extra)
      else
        redis.call('DEL', KEYS[j])
      end
    end
  end
elseif not allowed or mode == 2 then
  for i = 1, nitems do
    if oks[i] == 1 then
      local s = slots[i]
      local p = params[s]
      local _, ok, remaining, reset, retry, delay =
        step(algos[s], olds[s], now, 0, p[1], p[2], p[3], HIT, keeps[i], 0)
      rows[i] = pack('<ddddd', ok, remaining, reset, retry, delay)
    end
  end
end
rows[nitems + 1] = pack('<d', now)
return table.concat(rows)
