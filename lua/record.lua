-- record.lua: add outcomes to the window, evaluate transitions, release a probe lease.
-- ARGV[3] generation the outcome was admitted under   ARGV[4] successes   ARGV[5] failures
-- ARGV[6] how many of those were slow                  ARGV[7] lease id ('' = none)
-- ARGV[8..7+NCFG] config (optional, see _lib.lua)
-- ARGV[8+NCFG] (optional; only after the config) who reports:
--          '<client>:<seq>' a batched flush (with KEYS[3]): KEYS[3] = <prefix>:{<service>}:ids
--          keeps each client's highest applied seq, so a flush retried after a lost reply is
--          applied at most once;
--          '<client>' a sync record of a failed or slow call, sent only by a client whose
--          minimum_failing_workers is on.
--          With minimum_failing_workers on, a failed or slow outcome makes <client> a failing
--          client of the window (`wc`; docs/state-machine.md "Quorum").
-- Returns the lean reply (closed, no transition made) or the full reply: docs/state-machine.md ("Reply").

-- Fast path: the common call and the batched flush. Closed, the caller's fingerprint stored, no
-- lease, the same generation, before `xr` (the TTL refresh not due, and so the same bucket: xr is
-- never later than the bucket's end), and no trip (the one predicate, trip_cause): count and
-- return the lean reply. Every hot field must be a number, as the general path requires: anything
-- else (and any doubt) takes the general path below, which starts again from the values read in
-- the head and judges them (CORRUPT, NOCONFIG); nothing has been written here. Each field is
-- converted once (a tonumber() of a string is two strtod calls: the largest part of this path's
-- own time). The fast path does not read minimum_failing_workers (a quorum only holds a trip
-- back): a call that would trip without it takes the general path, which knows it.
-- Two callers take it:
-- - no config given (ARGV[8] nil): the trip check reads the stored hot config (q*);
-- - a batched flush ('<client>:<seq>' at ARGV[8+NCFG], KEYS[3]) given its config, when the stored
--   `cfg` is exactly the given values, the stored qr qm qc qs the given texts (so numbers, as the
--   general path requires, with no tonumber of them) and no override (`ov`) is stored: then the
--   general path would store nothing and run on the given values (the trip check reads them), with
--   minimum_failing_workers 0 or nothing failed or slow (else it would note the client in `wc`).
--   A seq already applied (a duplicate) counts nothing and writes nothing; a new one is then
--   stored in KEYS[3] as the general path does, after the breaker hash.
-- What both paths read of a batch (written once, here):
local CFG = 7  -- the config's values are ARGV[CFG + 1 .. CFG + NCFG] (after 2 + 5 arguments)
local I_BATCH = CFG + NCFG + 1  -- who reports: '<client>:<seq>' (a batch) or '<client>'
local BATCH_ID = '^(.+):(%d+)$'  -- '<client>:<seq>'
local IDS_TTL_MS = 3600000  -- the batch ids' expiry: a client silent for an hour has no retry pending
if ARGV[7] == '' and H_st == 'closed' and H_fp == FP and not REFRESH_DUE then
  local ns, nf, nslow, g = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(H_g or 0)
  local go, client, seq, dup = ARGV[8] == nil, nil, nil, false
  if not go and FP ~= '' and KEYS[3] ~= nil and nf and nslow then
    client, seq = string.match(ARGV[I_BATCH] or '', BATCH_ID)
    if client and (tonumber(ARGV[CFG + I_WMIN]) == 0 or nf + nslow == 0) and H_qr == ARGV[CFG + I_FRT]
        and H_qm == ARGV[CFG + I_MIN] and H_qc == ARGV[CFG + I_CXN] and H_qs == ARGV[CFG + I_SRT] then
      local v = redis.call('HMGET', K_STATE, 'cfg', 'ov')
      if v[1] == table.concat(ARGV, ',', CFG + 1, CFG + NCFG) and (not v[2] or v[2] == '') then
        go = true  -- (the trip check's stored qr qm qc qs are the given texts: checked above)
        seq = tonumber(seq)
        local last = tonumber(redis.call('HGET', KEYS[3], client))
        dup = last ~= nil and seq <= last
      end
    end
  end
  local tc, tf, ts, cx0, frt, min, cxn, srt
  if go then
    tc, tf, ts, cx0 = tonumber(H_tc or 0), tonumber(H_tf or 0), tonumber(H_ts or 0), tonumber(H_cx or 0)
    frt, min, cxn, srt = tonumber(H_qr), tonumber(H_qm), tonumber(H_qc), tonumber(H_qs)
  end
  if go and ns and nf and nslow and g and tc and tf and ts and cx0 and frt and min and cxn and srt
      and ns >= 0 and nf >= 0 and nslow >= 0 and nslow <= ns + nf and tonumber(ARGV[3]) == g then
    if dup then ns, nf, nslow = 0, 0, 0 end  -- (checked first: a bad count fails there too)
    local n, c0, f0, s0 = ns + nf, tonumber(H_c0 or 0), tonumber(H_f0 or 0), tonumber(H_s0 or 0)
    tc, tf, ts = tc + n, tf + nf, ts + nslow
    local cx = cx0 + nf
    if ns > 0 then cx = nf end
    -- the hot fields it does not use: numbers too, as the general path requires (else CORRUPT or
    -- NOCONFIG there)
    if c0 and f0 and s0 and (not H_ou or tonumber(H_ou)) and (not H_be or tonumber(H_be))
        and (not H_fu or tonumber(H_fu)) and (not H_oc or tonumber(H_oc)) and tonumber(H_qb) and tonumber(H_qn)
        and not trip_cause(tc, tf, ts, cx, frt, min, cxn, srt) then
      -- the general path's writes, in one HSET: the counts, and cx when it changed
      local w, k = {'c0', c0 + n, 'tc', tc}, 4
      if nf > 0 then w[5] = 'f0'; w[6] = f0 + nf; w[7] = 'tf'; w[8] = tf; k = 8 end
      if nslow > 0 then w[k + 1] = 's0'; w[k + 2] = s0 + nslow; w[k + 3] = 'ts'; w[k + 4] = ts; k = k + 4 end
      if cx ~= cx0 then w[k + 1] = 'cx'; w[k + 2] = cx; k = k + 2 end
      if n > 0 then redis.call('HSET', K_STATE, unpack(w, 1, k)) end  -- (n = 0: nothing changed)
      if client ~= nil and not dup then  -- a new batch: its seq, as the general path stores it
        redis.call('HSET', KEYS[3], client, seq)
        redis.call('PEXPIRE', KEYS[3], IDS_TTL_MS)
      end
      return lean_reply('closed', g)
    end
  end
end

--@lib

local gen = num(3, 'generation')
local ns, nf, nslow = num(4, 'successes'), num(5, 'failures'), num(6, 'slow')
local lease = ARGV[7] or ''
if ns < 0 or nf < 0 or nslow < 0 or nslow > ns + nf then
  fail('successes, failures and slow must be >= 0, slow <= successes + failures')
end

local batch, client, seq = ARGV[I_BATCH], nil, nil
local reporter = nil  -- the client that reports these outcomes, when it said
local duplicate = false
if batch ~= nil and batch ~= '' then
  client, seq = string.match(batch, BATCH_ID)
  if client == nil then
    reporter = string.match(batch, '^[%w_.-]+$')
    if reporter == nil or #batch > 64 then
      fail("who reports is '<client>:<seq>' or '<client>' (1-64 of A-Z a-z 0-9 _ . -), got " .. shown(batch))
    end
  else
    if KEYS[3] == nil then fail('a batch id is <client>:<seq> and needs KEYS[3]') end
    seq = tonumber(seq)
    local last = tonumber(redis.call('HGET', KEYS[3], client))
    duplicate = last ~= nil and seq <= last
    reporter = client
  end
end

begin(5)
if lease ~= '' then release(lease) end

if gen == S.g and not duplicate then
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
    if reporter ~= nil and (nf > 0 or nslow > 0) and full().wmin > 0 then
      if not string.match(reporter, '^[%w_.-]+$') or #reporter > 64 then
        fail('a client id is 1-64 of A-Z a-z 0-9 _ . -, got ' .. shown(reporter))
      end
      note_failing(reporter)
    end
    if S.st == 'closed' then
      local cause = trip_cause(S.tc, S.tf, S.ts, S.cx, C.frt, C.min, C.cxn, C.srt)
      if cause and full().wmin > 0 then  -- the quorum, read only when it matters
        cause = trip_cause(S.tc, S.tf, S.ts, S.cx, C.frt, C.min, C.cxn, C.srt, failing_clients(), C.wmin)
      end
      if cause then transition('open', cause, '') end
    end
  elseif S.st == 'half_open' then
    local hfrt = full().hfrt
    if hfrt == 0 then  -- off: one failed or slow probe reopens, half_open_successes close
      if nf > 0 or nslow > 0 then
        transition('open', (nf > 0) and 'probe failed' or 'probe slow', '')
      else  -- also with no success: a config change may have lowered half_open_successes
        local hs = lazy('hs') + ns
        if ns > 0 then set('hs', hs) end
        if hs >= C.hsucc then
          transition('closed', hs .. ((hs == 1) and ' probe succeeded' or ' probes succeeded'), '')
        end
      end
    else  -- by rate: the verdict of half_open_max_calls probes, as soon as it is certain
      local bad = nf + nslow
      if bad > ns + nf then bad = ns + nf end  -- a slow probe counts as failed
      local hs, hf, n = lazy('hs') + ns + nf - bad, lazy('hf') + bad, C.hmax
      if ns + nf - bad > 0 then set('hs', hs) end
      if bad > 0 then set('hf', hf) end
      if hf / n >= hfrt then
        transition('open', string.format('%d of %d probes failed, %.2f >= %.2f', hf, n, hf / n, hfrt), '')
      elseif (n - hs) / n < hfrt then  -- (also with no outcome: the config may have changed)
        transition('closed', string.format('%d of %d probes succeeded, failure rate < %.2f', hs, n, hfrt), '')
      end
    end
  end
end

save(true)
if client ~= nil and not duplicate then
  redis.call('HSET', KEYS[3], client, seq)
  redis.call('PEXPIRE', KEYS[3], IDS_TTL_MS)
end
-- the lean reply when the call made no transition and the breaker is closed (as the fast path)
if #TRANS == 0 and S.st == 'closed' then return lean_reply('closed', S.g) end
return reply('', 0)
