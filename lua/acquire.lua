-- acquire.lua: move open -> half_open when open_until has passed; grant a probe lease when
-- fewer than half_open_max_calls are live. No arguments of its own; ARGV[3..2+NCFG] config (optional).
-- Returns the lean reply (closed, no transition made: admitted, no lease) or the full reply of
-- docs/state-machine.md; field 15 is the lease id ('' = none), field 16 the time (ms) a denied
-- caller may try again (0 = unknown).

-- Fast path: the common call (a worker's cache went stale on a closed breaker). Closed, the
-- caller's fingerprint stored, before `xr` (no TTL refresh and no rotation due: xr is never
-- later than the bucket's end), every hot field a number when present and the stored hot config
-- usable (the general path's checks: else CORRUPT or NOCONFIG there): the general path would
-- write nothing and admit; so does this, with the lean reply. Anything else takes the general
-- path. The checks are written inline: a helper function would be a closure built on every call
-- of every script, capturing 18 upvalues.
if ARGV[3] == nil and H_st == 'closed' and H_fp == FP and not REFRESH_DUE then
  local g = tonumber(H_g or 0)
  if g and (not H_ou or tonumber(H_ou)) and (not H_be or tonumber(H_be)) and (not H_tc or tonumber(H_tc))
      and (not H_tf or tonumber(H_tf)) and (not H_ts or tonumber(H_ts)) and (not H_c0 or tonumber(H_c0))
      and (not H_f0 or tonumber(H_f0)) and (not H_s0 or tonumber(H_s0)) and (not H_cx or tonumber(H_cx))
      and (not H_fu or tonumber(H_fu)) and (not H_oc or tonumber(H_oc)) and tonumber(H_qb)
      and tonumber(H_qn) and tonumber(H_qr) and tonumber(H_qm) and tonumber(H_qc) and tonumber(H_qs) then
    return lean_reply('closed', g)
  end
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
