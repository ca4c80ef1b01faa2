-- acquire.lua: move open -> half_open when open_until has passed; grant a probe lease when
-- fewer than half_open_max_calls are live. No arguments of its own; ARGV[3..2+NCFG] config (optional).
-- Returns the reply of docs/state-machine.md; field 15 is the lease id ('' = none),
-- field 16 the time (ms) a denied caller may try again (0 = unknown).

--@lib

begin(0)
local lease, retry_at = '', 0
if S.st == 'open' then
  retry_at = S.ou
elseif S.st == 'forced_open' then
  retry_at = S.fu
elseif S.st == 'half_open' then
  local live, earliest = {}, nil
  local list = leases()
  for i = 1, #list do
    if list[i][2] > now then
      live[#live + 1] = list[i]
      if earliest == nil or list[i][2] < earliest then earliest = list[i][2] end
    end
  end
  full()
  if #live < C.hmax then
    local hn = lazy('hn') + 1
    set('hn', hn)
    lease = S.g .. ':' .. hn
    live[#live + 1] = {lease, now + C.probe}
    store_leases(live)
  else
    retry_at = earliest
    if #live ~= #list then store_leases(live) end
  end
end
save(true)
return reply(lease, retry_at)
