-- read.lua: return the snapshot; changes nothing but the lazy expiry of elapsed states and
-- bucket rotation. ARGV[3] '1' = create nothing when the key does not exist;
-- ARGV[4..3+NCFG] config (optional).
-- Returns the reply of docs/state-machine.md, then: exists (1/0), cfg, fp, last transition
-- time (ms), from, cause, actor, overrides (ov), client config (cc), previous fingerprint (pf),
-- time of the last fingerprint change (pt, ms; 0 = none), failing clients in the window (the
-- quorum's count, docs/state-machine.md "Quorum"; 0 while none is tracked).

--@lib

begin(1)
save(ARGV[3] ~= '1')
local out = reply('', 0)
out[#out + 1] = EXISTS and 1 or 0
out[#out + 1] = lazy('cfg') or ''
out[#out + 1] = S.fp or ''
out[#out + 1] = lazy('lt')
out[#out + 1] = lazy('lf') or ''
out[#out + 1] = lazy('lc') or ''
out[#out + 1] = lazy('la') or ''
out[#out + 1] = lazy('ov') or ''
out[#out + 1] = lazy('cc') or lazy('cfg') or ''  -- `cc` is stored only when it differs
out[#out + 1] = lazy('pf') or ''
out[#out + 1] = lazy('pt')
out[#out + 1] = failing_clients()
return out
