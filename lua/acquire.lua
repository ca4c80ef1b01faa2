-- acquire.lua: move open -> half_open when open_until has passed; grant a probe lease when
-- fewer than half_open_max_calls are live. No arguments of its own; ARGV[3..2+NCFG] config (optional).
-- Returns the lean reply (closed, no transition made: admitted, no lease) or the full reply of
-- docs/state-machine.md; field 15 is the lease id ('' = none), field 16 the time (ms) a denied
-- caller may try again (0 = unknown).

-- Fast path: the common call (a worker's cache went stale on a closed breaker). Closed, the
-- caller's fingerprint stored, before `xr` (no TTL refresh and no rotation due: xr is never
-- later than the bucket's end), every hot field a number: the general path would write nothing
-- and admit; so does this, with the lean reply. Anything else takes the general path.
if ARGV[3] == nil and H_st == 'closed' and H_fp == FP and not refresh_due() and hot_fields_ok() then
  return lean_reply('closed', tonumber(H_g or 0))
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
