-- record.lua: add outcomes to the window, evaluate transitions, release a probe lease.
-- ARGV[3] generation the outcome was admitted under   ARGV[4] successes   ARGV[5] failures
-- ARGV[6] how many of those were slow                  ARGV[7] lease id ('' = none)
-- ARGV[8..20] config (optional, see _lib.lua)
-- Returns the reply of docs/state-machine.md ("Reply").

local gen = num(3, 'generation')
local ns, nf, nslow = num(4, 'successes'), num(5, 'failures'), num(6, 'slow')
local lease = ARGV[7] or ''
if ns < 0 or nf < 0 or nslow < 0 or nslow > ns + nf then
  fail('successes, failures and slow must be >= 0, slow <= successes + failures')
end

begin(5)
if lease ~= '' then release(lease) end

if gen == S.g then
  if S.st == 'closed' or S.st == 'disabled' then
    local n = ns + nf
    if n > 0 then
      set('c0', S.c0 + n); set('tc', S.tc + n)
      if nf > 0 then set('f0', S.f0 + nf); set('tf', S.tf + nf) end
      if nslow > 0 then set('s0', S.s0 + nslow); set('ts', S.ts + nslow) end
    end
    local cx = S.cx + nf
    if ns > 0 then cx = nf end
    if cx ~= S.cx then set('cx', cx) end
    if S.st == 'closed' then
      if C.cxn > 0 and S.cx >= C.cxn then
        transition('open', 'consecutive_failures ' .. S.cx .. ' >= ' .. C.cxn, '')
      elseif S.tc >= C.min and S.tf / S.tc >= C.frt then
        transition('open', string.format('failure_rate %.2f >= %.2f over %d calls',
          S.tf / S.tc, C.frt, S.tc), '')
      elseif S.tc >= C.min and S.ts > 0 and S.ts / S.tc >= C.srt then
        transition('open', string.format('slow_call_rate %.2f >= %.2f over %d calls',
          S.ts / S.tc, C.srt, S.tc), '')
      end
    end
  elseif S.st == 'half_open' then
    if nf > 0 or nslow > 0 then
      transition('open', (nf > 0) and 'probe failed' or 'probe slow', '')
    elseif ns > 0 then
      local hs = lazy('hs') + ns
      set('hs', hs)
      if hs >= full().hsucc then transition('closed', hs .. ' probes succeeded', '') end
    end
  end
end

save(true)
return reply('', 0)
