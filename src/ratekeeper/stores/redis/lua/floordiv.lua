-- Python's float floor division a // b (CPython's float_floor_div, b > 0).
local function floordiv(a, b)
  local mod = fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and ((b < 0) ~= (mod < 0)) then
    div = div - 1
  end
  if div == 0 then return 0 end
  local fd = floor(div)
  if div - fd > 0.5 then fd = fd + 1 end
  return fd
end
