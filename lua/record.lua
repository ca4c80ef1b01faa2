-- record.lua: add outcomes to the window, evaluate transitions, release a probe lease.
-- ARGV[3] generation the outcome was admitted under   ARGV[4] successes   ARGV[5] failures
-- ARGV[6] how many of those were slow                  ARGV[7] lease id ('' = none)
-- ARGV[8] batch id ('' = none): '<client>:<seq>', a batched flush (with KEYS[3] =
--         <prefix>:{<service>}:ids, which keeps each client's highest applied seq, so a flush
--         retried after a lost reply is applied at most once)
-- ARGV[9] reporter ('' = none): '<client>', sent with a failed or slow outcome by a client whose
--         minimum_failing_workers is on: it becomes a failing client of the window (`wc`;
--         docs/state-machine.md "Quorum")
-- ARGV[10..9+NCFG] config (optional, see _head.lua)
-- Returns the bare reply (`now`, an integer: closed at the generation sent, no transition made),
-- the lean reply (closed, another generation) or the full reply: docs/state-machine.md ("Reply").

-- What both paths read of the arguments and the batch ids (written once, here):
local CFG = 9  -- a given config's values are ARGV[CFG + 1 .. CFG + NCFG] (after 2 + 7 arguments)
local BATCH_ID = '^(.+):(%d+)$'  -- '<client>:<seq>'
-- The batch ids (KEYS[3]): field <client> = its highest applied seq; field '' (no client has
-- that name) = when the key's expiry is next refreshed. The expiry is IDS_TTL_MS, refreshed by
-- the first batch after IDS_REFRESH_MS: a batch is remembered for at least an hour after it was
-- applied (a client silent that long has no retry pending), and most flushes pay no PEXPIRE.
local IDS_TTL_MS, IDS_REFRESH_MS = 7200000, 3600000
-- Built only for a call with a batch id (the common record has none, and a closure is built on
-- every call that reaches its definition):
-- batch_seen(client): the client's last applied seq (nil = none) and whether the ids key's expiry is due;
-- batch_applied(client, seq, refresh): store a new seq of the client (after the breaker hash:
-- nothing is written before the checks).
local batch_seen, batch_applied
if ARGV[8] ~= nil and ARGV[8] ~= '' then
  batch_seen = function(client)
    local v = redis.call('HMGET', KEYS[3], client, '')
    local due = tonumber(v[2])
    return tonumber(v[1]), due == nil or now >= due
  end
  batch_applied = function(client, seq, refresh)
    if refresh then
      redis.call('HSET', KEYS[3], client, seq, '', now + IDS_REFRESH_MS)
      redis.call('PEXPIRE', KEYS[3], IDS_TTL_MS)
    else
      redis.call('HSET', KEYS[3], client, seq)
    end
  end
end

-- Fast path: the common call and the batched flush. No config given, no lease, no reporter,
-- closed, the caller's fingerprint stored, the same generation, before `xr` (the TTL refresh not
-- due, and so the same bucket: xr is never later than the bucket's end), and no trip (the one
-- predicate, trip_cause, on the stored hot config q*): count and return the bare reply. Every
-- hot field must be a number, as the general path requires: anything else (and any doubt) takes
-- the general path below, which starts again from the values read in the head and judges them
-- (CORRUPT, NOCONFIG); nothing has been written here. It reads only the fields it uses (the
-- --@fast-path-reads line; the rest are read where the library begins): one it does not read
-- (`ou be fu oc qb qn`: the open and forced deadlines, the open count, the bucket layout) is
-- neither used nor written here, and the first general path refuses it if corrupt (at the latest
-- when `xr` passes, at the end of the bucket: docs/state-machine.md "Corrupt state"). Each field is converted once (a
-- tonumber() of a string is two strtod calls: the largest part of this path's own time). The
-- fast path does not read minimum_failing_workers: a quorum only holds a trip back, so a call
-- that would trip without it takes the general path, which knows it; and only a reporter
-- (ARGV[9], which takes the general path) is noted as a failing client.
-- A batch ('<client>:<seq>', KEYS[3]) whose seq is already applied (a duplicate) counts and
-- writes nothing; a new one is stored in KEYS[3] after the breaker hash, as the general path does.
--@fast-path-reads st g fp xr tc tf ts c0 f0 s0 cx qr qm qc qs
if #ARGV == CFG and ARGV[7] == '' and ARGV[9] == '' and H_st == 'closed' and H_fp == FP and not REFRESH_DUE then
  local ns, nf, nslow, g = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(H_g or 0)
  local tc, tf, ts, cx0 = tonumber(H_tc or 0), tonumber(H_tf or 0), tonumber(H_ts or 0), tonumber(H_cx or 0)
  local frt, min, cxn, srt = tonumber(H_qr), tonumber(H_qm), tonumber(H_qc), tonumber(H_qs)
  local client, seq = nil, nil
  if ARGV[8] ~= '' and KEYS[3] ~= nil then client, seq = string.match(ARGV[8], BATCH_ID) end
  if (ARGV[8] == '' or client) and ns and nf and nslow and g and tc and tf and ts and cx0 and frt and min
      and cxn and srt and ns >= 0 and nf >= 0 and nslow >= 0 and nslow <= ns + nf and tonumber(ARGV[3]) == g then
    local last, refresh = nil, false
    if client then
      seq = tonumber(seq)
      last, refresh = batch_seen(client)
      if last ~= nil and seq <= last then ns, nf, nslow = 0, 0, 0 end  -- a duplicate: counts nothing
    end
    local n, c0, f0, s0 = ns + nf, tonumber(H_c0 or 0), tonumber(H_f0 or 0), tonumber(H_s0 or 0)
    tc, tf, ts = tc + n, tf + nf, ts + nslow
    local cx = cx0 + nf
    if ns > 0 then cx = nf end
    if c0 and f0 and s0 and not trip_cause(tc, tf, ts, cx, frt, min, cxn, srt) then
      -- the general path's writes, in one HSET: the counts, and cx when it changed
      local w, k = {'c0', c0 + n, 'tc', tc}, 4
      if nf > 0 then w[5] = 'f0'; w[6] = f0 + nf; w[7] = 'tf'; w[8] = tf; k = 8 end
      if nslow > 0 then w[k + 1] = 's0'; w[k + 2] = s0 + nslow; w[k + 3] = 'ts'; w[k + 4] = ts; k = k + 4 end
      if cx ~= cx0 then w[k + 1] = 'cx'; w[k + 2] = cx; k = k + 2 end
      if n > 0 then redis.call('HSET', K_STATE, unpack(w, 1, k)) end  -- (n = 0: nothing changed)
      if client and (last == nil or seq > last) then batch_applied(client, seq, refresh) end
      return now  -- the bare reply: closed, at the generation the call sent (g, as checked above)
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

if #ARGV ~= CFG and #ARGV ~= CFG + NCFG then
  fail('record takes 7 arguments and then, optionally, the ' .. NCFG .. ' config values; got ' .. (#ARGV - 2))
end
local batch, reporter = ARGV[8], ARGV[9]
local client, seq, last, refresh = nil, nil, nil, false
local duplicate = false
if batch ~= '' then
  client, seq = string.match(batch, BATCH_ID)
  if client == nil then fail("a batch id is '<client>:<seq>', got " .. shown(batch)) end
  if KEYS[3] == nil then fail('a batch id is <client>:<seq> and needs KEYS[3]') end
  seq = tonumber(seq)
  last, refresh = batch_seen(client)
  duplicate = last ~= nil and seq <= last
end
if reporter ~= '' and (not string.match(reporter, '^[%w_.-]+$') or #reporter > 64) then
  fail('a reporter is a client id, 1-64 of A-Z a-z 0-9 _ . -, got ' .. shown(reporter))
end

begin(7)
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
    if reporter ~= '' and (nf > 0 or nslow > 0) and full().wmin > 0 then note_failing(reporter) end
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
if client ~= nil and not duplicate then batch_applied(client, seq, refresh) end
-- No transition made and the breaker closed: the bare reply (`now` alone) when the generation is
-- the one the call sent, as the fast path answers; else the lean reply, which names it (the call's
-- generation was stale). docs/state-machine.md "Bare reply".
if #TRANS == 0 and S.st == 'closed' then
  if S.g == gen then return now end
  return lean_reply('closed', S.g)
end
return reply('', 0)
