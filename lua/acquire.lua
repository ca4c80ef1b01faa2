-- acquire.lua: move open -> half_open when open_until has passed; grant a probe lease when
-- fewer than half_open_max_calls are live. No arguments of its own; ARGV[3..2+NCFG] config (optional).
-- Returns the lean reply (closed, no transition made: admitted, no lease) or the full reply of
-- docs/state-machine.md; field 15 is the lease id ('' = none), field 16 the time (ms) a denied
-- caller may try again (0 = unknown).

-- Fast path: the common call (a worker's cache went stale on a closed breaker). Closed, the
-- caller's fingerprint stored and before `xr` (no TTL refresh and no rotation due: xr is never
-- later than the bucket's end): the general path would admit and write nothing; so does this,
-- with the lean reply. It reads only what it uses (the line below; the head's loader reads the
-- rest where the library begins): the window and the stored config are not read here, so a
-- corrupt one is refused by the next call that reads it (the worker's record reads the window and
-- the hot config; every general path reads them all), not by this one, which neither uses nor
-- writes it (docs/state-machine.md "Corrupt state"). Anything else takes the general path.
--@fast-path-reads st g fp xr
if ARGV[3] == nil and H_st == 'closed' and H_fp == FP and not REFRESH_DUE then
  local g = tonumber(H_g or 0)
  if g then return lean_reply('closed', g) end
end

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
-- the lean reply when admitted closed without a transition (as the fast path)
if #TRANS == 0 and S.st == 'closed' then return lean_reply('closed', S.g) end
return reply(lease, retry_at)
