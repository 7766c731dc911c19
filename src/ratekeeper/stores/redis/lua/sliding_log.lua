-- Sliding log, with its own driver (not limits.lua): the log is read and changed in place with
-- GETRANGE / APPEND / SETRANGE, never parsed and rewritten whole, so an admission costs
-- O(log expired + expired + 1) commands and bytes.
--
-- State: a string, a 24-byte header then 16-byte records (time, cost as little-endian doubles),
-- sorted by time, oldest first. Header: 'RKL1', start (uint32: the records before it have left
-- the window and are dead), total (double), exact (double: 1 while every cost admitted since the
-- log was last empty is a whole number; then total is the exact sum of the live costs, else the
-- live costs are summed oldest first, as the Python reference does). The dead prefix is dropped
-- when it outgrows the live records (amortized O(1)). An empty log is never stored: the key is
-- deleted instead. Anything else under the key (an older layout: its length is a multiple of 16,
-- never 24 + 16n) reads as an empty log and is overwritten by the next admission.
-- ARGV and reply as in limits.lua.
local MAGIC = 'RKL1'
local HEAD = 24
local BATCH = 256 -- records read per GETRANGE when walking the log
local sub = string.sub

local function time_at(key, i) -- time of record i (0-based)
  local off = HEAD + 16 * i
  return (unpack_('<d', redis.call('GETRANGE', key, off, off + 7)))
end

local function range(key, i, j) -- the bytes of records i .. j - 1
  return redis.call('GETRANGE', key, HEAD + 16 * i, HEAD + 16 * j - 1)
end

-- The log under key as seen at now: the live records are cut .. n - 1.
local function read(key, now, per)
  local p = { key = key, n = 0, start = 0, cut = 0, total = 0, exact = true, used = 0 }
  local len = redis.call('STRLEN', key)
  if len < HEAD + 16 or (len - HEAD) % 16 ~= 0 then return p end
  local h = redis.call('GETRANGE', key, 0, HEAD - 1)
  if sub(h, 1, 4) ~= MAGIC then return p end
  local start, total, exact = unpack_('<I4dd', h, 5)
  local n = (len - HEAD) / 16
  if start >= n then return p end
  p.n, p.start = n, start
  local cutoff = now + EPS_TIME - per -- entries at or before the cutoff have left the window
  -- cut: the first record after the cutoff (galloping, then bisecting)
  local cut = start
  if time_at(key, start) <= cutoff then
    local lo, step, hi = start, 1, start + 1 -- record lo is at or before the cutoff
    while hi < n and time_at(key, hi) <= cutoff do
      lo = hi
      step = step * 2
      hi = start + step
    end
    if hi > n then hi = n end
    lo = lo + 1
    while lo < hi do
      local mid = floor((lo + hi) / 2)
      if time_at(key, mid) <= cutoff then lo = mid + 1 else hi = mid end
    end
    cut = lo
  end
  p.cut = cut
  if cut == n then return p end -- every entry left: an empty log, total 0 and exact
  if exact == 1 then
    if cut > start then
      local gone, bytes = 0, range(key, start, cut)
      for pos = 9, #bytes, 16 do
        gone = gone + unpack_('<d', bytes, pos)
      end
      total = total - gone
    end
    p.total, p.exact, p.used = total, true, total
  else
    local used = 0
    for i = cut, n - 1, BATCH do
      local bytes = range(key, i, min(i + BATCH, n))
      for pos = 9, #bytes, 16 do
        used = used + unpack_('<d', bytes, pos)
      end
    end
    p.total, p.exact, p.used = 0, false, used
  end
  p.newest = time_at(key, n - 1)
  return p
end

local function decide(p, now, cost, amount, per)
  local used = p.used
  local newest = p.newest
  local available = amount - used + EPS_UNITS
  if cost <= available or cost == 0 then
    if cost ~= 0 and (newest == nil or now > newest) then newest = now end
    local reset = 0.0
    if newest ~= nil then reset = newest + per - now end
    return 1, units_left(amount - (used + cost) + EPS_UNITS), reset, 0, 0
  end
  local retry = 0.0
  if cost > amount then
    retry = INF
  else
    local freed = used + cost - amount -- this much must leave the window first
    local key, n, found = p.key, p.n, false
    for i = p.cut, n - 1, BATCH do
      local bytes = range(key, i, min(i + BATCH, n))
      for pos = 1, #bytes, 16 do
        local when, spent = unpack_('<dd', bytes, pos)
        freed = freed - spent
        if freed <= EPS_UNITS then
          retry = when + per - now
          found = true
          break
        end
      end
      if found then break end
    end
  end
  local reset = 0.0
  if newest ~= nil then reset = newest + per - now end
  return 0, units_left(available), reset, max(retry, 0.0), 0
end

local function whole(x)
  return x == floor(x) and x - x == 0
end

-- Where a record at time `when` goes among the records of a string (after equal times).
local function bisect_bytes(bytes, when)
  local lo, hi = 0, #bytes / 16
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if when < unpack_('<d', bytes, 16 * mid + 1) then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- Store the log of plan p (an admission at now of cost), its key living ttl ms.
local function commit(p, now, cost, ttl)
  local key, n, cut = p.key, p.n, p.cut
  local live = n - cut
  local total, exact = p.total, p.exact
  if cost ~= 0 then
    if exact and whole(cost) then total = total + cost else exact, total = false, 0 end
  end
  local head = MAGIC .. pack('<I4dd', cut, total, exact and 1 or 0)
  if live == 0 then
    if cost == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, MAGIC .. pack('<I4dd', 0, total, exact and 1 or 0)
        .. pack('<dd', now, cost), 'PX', ttl)
    end
    return
  end
  local record = cost ~= 0 and pack('<dd', now, cost) or nil
  if cut > live then -- the dead prefix outgrew the live records: drop it
    local body = range(key, cut, n)
    if record then
      if now >= p.newest then
        body = body .. record
      else
        local at = 16 * bisect_bytes(body, now)
        body = sub(body, 1, at) .. record .. sub(body, at + 1)
      end
    end
    redis.call('SET', key, MAGIC .. pack('<I4dd', 0, total, exact and 1 or 0) .. body, 'PX', ttl)
    return
  end
  if record then
    if now >= p.newest then
      redis.call('APPEND', key, record)
    else -- threads racing, a clock stepping back: insert in place, after equal times
      local lo, hi = cut, n
      while lo < hi do
        local mid = floor((lo + hi) / 2)
        if now < time_at(key, mid) then hi = mid else lo = mid + 1 end
      end
      redis.call('SETRANGE', key, HEAD + 16 * lo, record .. range(key, lo, n))
    end
  end
  if cut ~= p.start or cost ~= 0 then redis.call('SETRANGE', key, 0, head) end
  redis.call('PEXPIRE', key, ttl)
end

local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS
local packed = ARGV[3]
local write, extra = unpack_('<dd', packed)
local plans, params, reply = {}, {}, {}
local allowed = true
for i = 1, n do
  local amount, per = unpack_('<dd', packed, 24 * i - 7)
  local p = read(KEYS[i], now, per)
  plans[i], params[i] = p, { amount, per }
  local ok, remaining, reset, retry, delay = decide(p, now, cost, amount, per)
  local r = 3 * i - 2
  reply[r], reply[r + 1], reply[r + 2] = ok, remaining, pack('<ddd', reset, retry, delay)
  if ok == 0 then allowed = false end
end
if allowed then
  if write == 1 then
    for i = 1, n do
      commit(plans[i], now, cost, ceil(params[i][2] * 1000) + extra)
    end
  end
elseif n > 1 then -- the limits that would have passed are described without this request's cost
  for i = 1, n do
    local r = 3 * i - 2
    if reply[r] == 1 then
      local q = params[i]
      local ok, remaining, reset, retry, delay = decide(plans[i], now, 0, q[1], q[2])
      reply[r], reply[r + 1], reply[r + 2] = ok, remaining, pack('<ddd', reset, retry, delay)
    end
  end
end
return reply
