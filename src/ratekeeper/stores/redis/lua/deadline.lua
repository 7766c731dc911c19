-- Refuse to run after the caller gave up. DEADLINE (an ARGV, set by the first line of the script)
-- is the moment the caller stops waiting, in server time (integer microseconds), or '' for none.
-- Runs after prelude.lua (its server_time(): the script's clock() reuses this reading).
-- A command that reaches a server after its caller had its answer (the server was frozen, the
-- link was cut and came back) must change nothing: the caller was already answered by the
-- on_store_error policy. The error word DEADLINE makes the driver treat it as an outage.
if DEADLINE ~= nil and DEADLINE ~= '' then
  local t = server_time()
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(DEADLINE) then
    return redis.error_reply('DEADLINE the caller gave up before this command ran')
  end
end
