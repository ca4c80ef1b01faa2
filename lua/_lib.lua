-- distbreaker/_lib.lua: the general path shared by every script, inserted at its --@lib line
-- after _head.lua (which defined K_STATE, K_EVENTS, FP, now, the hot fields H_*, trip_cause,
-- REFRESH_DUE and lean_reply). docs/state-machine.md is the contract.
--
-- Every write of a script happens in save(), after every check and every computation (and
-- after the PUBLISH calls, which an ACL may refuse): a script that fails writes nothing.

-- A plain string: Redis 6.2's error handler rejects error tables, and fakeredis drops their text.
local function fail(msg)
  error('distbreaker: ' .. msg)
end

local function num(i, name)
  local v = tonumber(ARGV[i])
  if v == nil then fail(name .. ' must be a number, got ' .. tostring(ARGV[i])) end
  return v
end

local function is_state(st)
  return st == 'closed' or st == 'open' or st == 'half_open' or st == 'forced_open'
    or st == 'disabled'
end

local function service()
  return string.match(K_STATE, '^.*:{([^{}]*)}$') or K_STATE
end

-- A breaker hash holding what no script wrote (docs/state-machine.md "Corrupt state").
local function corrupt(what)
  fail('CORRUPT ' .. K_STATE .. ': ' .. what .. "; 'distbreaker reset " .. service()
    .. "' rewrites it")
end

local function shown(v)
  v = tostring(v)
  if #v > 40 then v = string.sub(v, 1, 40) .. '...' end
  return string.format('%q', v)
end

-- The hot fields as numbers (absent = the default). One that is present but not a number, or
-- an unknown state, is listed in BAD (begin() fails with CORRUPT, or control 'reset' drops it)
-- and read as its default.
local EXISTS = H_st ~= false
local S = {st = H_st or 'closed', g = tonumber(H_g or 0), ou = tonumber(H_ou or 0),
  be = tonumber(H_be), tc = tonumber(H_tc or 0), tf = tonumber(H_tf or 0),
  ts = tonumber(H_ts or 0), c0 = tonumber(H_c0 or 0), f0 = tonumber(H_f0 or 0),
  s0 = tonumber(H_s0 or 0), cx = tonumber(H_cx or 0), fu = tonumber(H_fu or 0),
  oc = tonumber(H_oc or 0), fp = H_fp or nil}
local BAD = nil  -- (tables made only when needed: the common call should not pay for them)
if not (is_state(S.st) and S.g and S.ou and (S.be or not H_be) and S.tc and S.tf and S.ts and S.c0
    and S.f0 and S.s0 and S.cx and S.fu and S.oc) then
  BAD = {}
  if not is_state(S.st) then BAD[1] = 'st is ' .. shown(S.st) .. ', not a state'; S.st = 'closed' end
  local raw = {g = H_g, ou = H_ou, be = H_be, tc = H_tc, tf = H_tf, ts = H_ts, c0 = H_c0,
    f0 = H_f0, s0 = H_s0, cx = H_cx, fu = H_fu, oc = H_oc}
  for _, f in ipairs({'g', 'ou', 'be', 'tc', 'tf', 'ts', 'c0', 'f0', 's0', 'cx', 'fu', 'oc'}) do
    if raw[f] and tonumber(raw[f]) == nil then
      BAD[#BAD + 1] = f .. ' is ' .. shown(raw[f]) .. ', not a number'
      if f ~= 'be' then S[f] = 0 end
    end
  end
end
local loaded = {}   -- lazily read fields
local W = {}        -- fields to HSET
local D = {}        -- fields to HDEL
local EVENTS = {}   -- transitions to XADD / PUBLISH on save
local TRANS = {}    -- 'from>to' made by this call
local LAST_CAUSE = ''
local TOUCH = false -- refresh the expiry on save (the TTL rule)
local REPAIR = false -- control 'reset': drop corrupt fields instead of failing
local REPAIRED = nil -- what a repair dropped (a list)

local LAZY_NUMERIC = {oa = true, hs = true, hf = true, hn = true, lt = true, pt = true}

local function repaired(what)
  REPAIRED = REPAIRED or {}
  REPAIRED[#REPAIRED + 1] = what
end

local function lazy(f)
  if not loaded[f] and (f == 'cfg' or f == 'ov') then
    -- read together: a call given a config needs both
    local o = (f == 'cfg') and 'ov' or 'cfg'
    local v = redis.call('HMGET', K_STATE, f, o)
    if not loaded[o] then S[o] = v[2] or nil; loaded[o] = true end
    S[f] = v[1] or nil; loaded[f] = true
  elseif not loaded[f] then
    local v = redis.call('HGET', K_STATE, f)
    if LAZY_NUMERIC[f] then v = tonumber(v) or 0 elseif v == false then v = nil end
    S[f] = v; loaded[f] = true
  end
  return S[f]
end

local function set(f, v)
  S[f] = v; loaded[f] = true; W[f] = v; D[f] = nil
end

local function del(f)
  S[f] = nil; loaded[f] = true; W[f] = nil; D[f] = true
end

-- Config ------------------------------------------------------------------------------------
-- C holds what the hot path needs; full() adds the rest, parsed only when a rare path needs it.
-- CFG_NAMES, DEFAULT_CFG, DEFAULT_BMS/DEFAULT_NB and check_cfg (the bounds of each value and
-- the rules between them) are generated from distbreaker/_schema.py, inserted here:
--@schema
local function split(s)
  local out = {}
  for v in string.gmatch(s, '[^,]+') do out[#out + 1] = v end
  return out
end

local CFG_INDEX = {}
for i = 1, NCFG do CFG_INDEX[CFG_NAMES[i]] = i end
local DEFAULT_VALUES = nil  -- DEFAULT_CFG split, made when a stored config lacks trailing values

-- The NCFG values (text) -> the parsed config; fails on a value out of bounds (nothing written
-- yet). A stored config written before the last values existed (shorter) takes their defaults.
local function parse_cfg(values)
  local c = {}
  for i = 1, NCFG do
    local t = values[i]
    if t == nil and i > NCFG_0_1 then
      DEFAULT_VALUES = DEFAULT_VALUES or split(DEFAULT_CFG)
      t = DEFAULT_VALUES[i]; values[i] = t
    end
    local v = tonumber(t)
    if v == nil then fail(CFG_NAMES[i] .. ' must be a number, got ' .. tostring(values[i])) end
    c[i] = v
  end
  check_cfg(c, values)
  return {frt = c[1], min = c[2], nb = c[4], cxn = c[5], srt = c[6], bms = math.floor(c[3] / c[4]),
    open = c[7], mult = c[8], maxo = c[9], hmax = c[10], hsucc = c[11], probe = c[12], ttl = c[13],
    hfrt = c[14], wmin = c[15], full = true}
end

-- Operator overrides 'name=value;name=value' (field `ov`) -> {index = value text}.
local function parse_ov(s)
  local out = {}
  for part in string.gmatch(s, '[^;]+') do
    local name, v = string.match(part, '^([%w_]+)=(.+)$')
    local i = name and CFG_INDEX[name]
    if not i then fail('config override must be name=value with a config name, got ' .. part) end
    if tonumber(v) == nil then fail(name .. ' must be a number, got ' .. v) end
    out[i] = v
  end
  return out
end

-- The NCFG values of a config with the stored overrides applied, and the parsed config.
-- An override set that would make this config invalid is ignored for it (docs/state-machine.md).
local function with_overrides(values)
  local ov = lazy('ov')
  if ov ~= nil and ov ~= '' then
    local merged = {unpack(values)}
    for i, v in pairs(parse_ov(ov)) do merged[i] = v end
    local ok, c = pcall(parse_cfg, merged)
    if ok then return merged, c end
  end
  return values, parse_cfg(values)
end

local C

-- The stored hot config (q*) when every field of it is a number, else nil.
local function hot_config()
  local bms, nb, frt, min = tonumber(H_qb), tonumber(H_qn), tonumber(H_qr), tonumber(H_qm)
  local cxn, srt = tonumber(H_qc), tonumber(H_qs)
  if bms and nb and frt and min and cxn and srt then
    return {bms = bms, nb = nb, frt = frt, min = min, cxn = cxn, srt = srt}
  end
  return nil
end

-- The stored config is missing or broken. A worker (it has a fingerprint) is asked for its
-- config, as after a fingerprint change; an operator's reset drops the stored config (the next
-- worker stores its own) and runs with the defaults; anything else fails with CORRUPT.
local function config_broken(what)
  if FP ~= '' then fail('NOCONFIG') end
  if not REPAIR then corrupt(what) end
  local fields = {'fp', 'cfg', 'cc', 'qb', 'qn', 'qr', 'qm', 'qc', 'qs'}
  for i = 1, #fields do del(fields[i]) end
  repaired(what)
  C = parse_cfg(split(DEFAULT_CFG))
  return C
end

-- The whole config in force (C has only the hot part when it came from q*).
local function full()
  if not C.full then
    local text = lazy('cfg')
    if text == nil then
      if FP ~= '' then fail('NOCONFIG') end  -- a fingerprint is stored but no config
      local F = parse_cfg(split(DEFAULT_CFG))
      for k, v in pairs(C) do F[k] = v end
      F.full = true
      C = F
    else
      local ok, F = pcall(parse_cfg, split(text))
      if not ok then return config_broken('cfg is ' .. shown(text) .. ', not a config') end
      for k, v in pairs(C) do F[k] = v end
      F.full = true
      C = F
    end
  end
  return C
end

-- Window ------------------------------------------------------------------------------------
local function epoch()
  return math.floor(now / C.bms)
end

local function clear_ring(nb)
  for i = 0, nb - 1 do del('r' .. i) end
end

local function clear_window()
  set('tc', 0); set('tf', 0); set('ts', 0); set('c0', 0); set('f0', 0); set('s0', 0)
  set('be', epoch())
  clear_ring(C.nb)
  del('wc')  -- the failing clients of the window (minimum_failing_workers)
end

-- Failing clients (minimum_failing_workers): `wc` = 'client=epoch;...', the bucket epoch of
-- each client's last failed or slow outcome, least recent first, at most MAX_FAILING. A client
-- counts while its epoch is in the window (epoch > be - buckets); rotation does not touch `wc`.
local function failing_list()
  local out = {}
  for id, e in string.gmatch(lazy('wc') or '', '([^=;]+)=(%d+)') do
    if tonumber(e) > S.be - C.nb then out[#out + 1] = {id, tonumber(e)} end
  end
  return out
end

local function failing_clients()
  return #failing_list()
end

-- `client` reported a failed or slow outcome now: it moves to the end (the most recent); the
-- least recent is dropped past MAX_FAILING.
local function note_failing(client)
  local list, parts = failing_list(), {}
  for i = 1, #list do
    if list[i][1] ~= client then parts[#parts + 1] = list[i][1] .. '=' .. list[i][2] end
  end
  parts[#parts + 1] = client .. '=' .. S.be
  local first = #parts - MAX_FAILING + 1
  if first < 1 then first = 1 end
  set('wc', table.concat(parts, ';', first))
end

local function rotate()
  local E = epoch()
  if S.be == nil then set('be', E); return end
  if E <= S.be then return end
  TOUCH = true
  if E - S.be >= C.nb then clear_window(); return end
  local cur = 'r' .. (S.be % C.nb)
  if S.c0 > 0 then set(cur, S.c0 .. ':' .. S.f0 .. ':' .. S.s0) else del(cur) end
  local fields = {}
  for e = S.be - C.nb + 1, E - C.nb do fields[#fields + 1] = 'r' .. (e % C.nb) end
  if #fields > 0 then
    local vals = redis.call('HMGET', K_STATE, unpack(fields))
    local tc, tf, ts = S.tc, S.tf, S.ts
    for j = 1, #fields do
      local v = vals[j]
      if v then
        local c, f, s = string.match(v, '^(%d+):(%d+):(%d+)$')
        if c then
          tc = tc - tonumber(c); tf = tf - tonumber(f); ts = ts - tonumber(s)
        elseif REPAIR then  -- (a reset clears the window anyway)
          repaired(fields[j] .. ' is ' .. shown(v))
        else
          corrupt(fields[j] .. ' is ' .. shown(v) .. ', not a bucket')
        end
      end
      del(fields[j])
    end
    set('tc', tc); set('tf', tf); set('ts', ts)
  end
  set('c0', 0); set('f0', 0); set('s0', 0); set('be', E)
end

-- Half-open leases: 'id=exp;id=exp' ---------------------------------------------------------
local function leases()
  local out = {}
  for id, exp in string.gmatch(lazy('hl') or '', '([^=;]+)=(%d+)') do
    out[#out + 1] = {id, tonumber(exp)}
  end
  return out
end

local function store_leases(list)
  local parts = {}
  for i = 1, #list do parts[i] = list[i][1] .. '=' .. list[i][2] end
  set('hl', table.concat(parts, ';'))
end

local function release(id)
  local list, kept, found = leases(), {}, false
  for i = 1, #list do
    if list[i][1] == id then found = true else kept[#kept + 1] = list[i] end
  end
  if found then store_leases(kept) end
end

-- THE CONFIG STORE (the one definition): the client config as passed (`cc`, only when it differs
-- from `cfg`), the config in force (`cfg`, overrides applied) and its hot part (`q*`),
-- written at once; `new` is the parsed `values`. A new bucket layout (against the stored one,
-- or the defaults' when none is stored; or the one stored earlier in this call) clears the window: the ring slots would mean something
-- else. The expiry is refreshed (idle_ttl may have changed).
local STORED_BMS, STORED_NB = tonumber(H_qb) or DEFAULT_BMS, tonumber(H_qn) or DEFAULT_NB
local function store_config(given, values, new)
  local ob, on = STORED_BMS, STORED_NB
  STORED_BMS, STORED_NB = new.bms, new.nb
  local cfg_text, cc_text = table.concat(values, ','), table.concat(given, ',')
  set('cfg', cfg_text)
  -- `cc` only when it differs from `cfg` (overrides in force): absent = the same (one copy, and
  -- a hash that stays small)
  if cc_text ~= cfg_text then set('cc', cc_text) else del('cc') end
  set('qb', new.bms); set('qn', new.nb); set('qr', values[1]); set('qm', new.min)
  set('qc', new.cxn); set('qs', values[6])
  C = new
  TOUCH = true
  if S.be ~= nil and (ob ~= new.bms or on ~= new.nb) then
    clear_ring(on); clear_window()
  end
end

-- A worker's stored config is usable: q* all numbers and `cfg` a valid config (the common
-- case, `cfg` = the values this call would store, needs no parsing).
local function stored_config_ok(values)
  if not (tonumber(H_qb) and tonumber(H_qn) and tonumber(H_qr) and tonumber(H_qm)
      and tonumber(H_qc) and tonumber(H_qs)) then
    return false
  end
  local text = lazy('cfg')
  if text == nil then return false end
  return text == table.concat(values, ',') or (pcall(parse_cfg, split(text)))
end

-- THE TRANSITION TABLE (the one definition): the allowed 'from>to' pairs. Which of these a
-- script makes, and why, is in the steps (docs/state-machine.md "Transitions"). Built by the
-- first transition of a call only: the common call makes none and should not pay for it.
local FORCED = {forced_open = true, disabled = true}
local function allowed(from, to)
  local T = {
    ['closed>open'] = true, ['closed>forced_open'] = true, ['closed>disabled'] = true,
    ['closed>closed'] = true,
    ['open>half_open'] = true, ['open>forced_open'] = true, ['open>disabled'] = true,
    ['open>closed'] = true,
    ['half_open>open'] = true, ['half_open>closed'] = true, ['half_open>forced_open'] = true,
    ['half_open>disabled'] = true,
    ['forced_open>closed'] = true, ['forced_open>forced_open'] = true,
    ['forced_open>disabled'] = true,
    ['disabled>closed'] = true, ['disabled>forced_open'] = true, ['disabled>disabled'] = true,
  }
  return T[from .. '>' .. to] == true
end

-- kind: 'reset' clears everything; otherwise the target state decides.
local function transition(to, cause, actor, kind)
  local from = S.st
  if not allowed(from, to) then
    fail('transition ' .. tostring(from) .. ' -> ' .. to .. ' is not allowed')
  end
  full()
  set('st', to)
  set('g', S.g + 1)
  TOUCH = true
  if FORCED[from] then set('fu', 0); set('fr', ''); set('fa', '') end
  if to == 'open' then
    local oc = S.oc + 1
    local exp = oc - 1
    if exp > 64 then exp = 64 end
    local dur = C.open * C.mult ^ exp
    if dur > C.maxo then dur = C.maxo end
    set('oc', oc); set('oa', now); set('ou', now + math.floor(dur))
    clear_window(); set('cx', 0)
  elseif to == 'half_open' then
    set('hl', ''); set('hs', 0); del('hf')
  elseif to == 'closed' and (from == 'half_open' or kind == 'reset') then
    clear_window(); set('oc', 0); set('cx', 0); set('hl', ''); set('hs', 0); del('hf')
  end
  set('lt', now); set('lf', from); set('lc', cause); set('la', actor)
  TRANS[#TRANS + 1] = from .. '>' .. to
  LAST_CAUSE = cause
  EVENTS[#EVENTS + 1] = {from, to, cause, actor, S.g, (to == 'open') and S.ou or 0}
end

-- The steps every script runs first (docs/state-machine.md, "Steps") ---------------------------
-- repair: control 'reset' rewrites a corrupt breaker instead of failing.
local function begin(nop, repair)
  REPAIR = repair or false
  if BAD and #BAD > 0 then
    if not REPAIR then corrupt(table.concat(BAD, ', ')) end
    for i = 1, #BAD do
      local f = string.match(BAD[i], '^(%S+)')
      if f ~= 'st' then local v = S[f]; del(f); S[f] = v end  -- read as its default
      repaired(BAD[i])
    end
  end
  local base = 2 + nop
  if ARGV[base + NCFG] ~= nil then
    -- config given: authoritative for this call (operator overrides win over it), stored
    -- when the fingerprint changed or the stored config is missing or broken
    local given = {unpack(ARGV, base + 1, base + NCFG)}
    local values
    values, C = with_overrides(given)
    if FP ~= '' and (S.fp ~= FP or not stored_config_ok(values)) then
      if S.fp and S.fp ~= FP then set('pf', S.fp); set('pt', now) end
      set('fp', FP)
      store_config(given, values, C)
    end
  elseif FP ~= '' then
    -- a worker: its fingerprint stored and the stored config usable, else it must send it
    C = (S.fp == FP) and hot_config() or nil
    if C == nil then fail('NOCONFIG') end
  else
    -- an operator: the stored config, else the defaults
    C = hot_config()
    if C == nil then
      if lazy('cfg') ~= nil then
        C = {}; full()  -- the whole stored config, or CORRUPT (a reset drops it)
      elseif H_qb or H_qn or H_qr or H_qm or H_qc or H_qs then
        config_broken('q* without cfg')
      else
        C = parse_cfg(split(DEFAULT_CFG))
      end
    end
  end
  if FORCED[S.st] and S.fu > 0 and now >= S.fu then
    transition('closed', S.st .. ' expired', '')
  end
  if S.st == 'open' and now >= S.ou then
    transition('half_open', 'open_duration elapsed', '')
  end
  rotate()
end

-- THE TTL RULE, part 2 (part 1: REFRESH_DUE in _head.lua). A script that saves refreshes the
-- expiry of both keys when it creates the key, makes a transition, rotates the window, stores a
-- config, or when the refresh is due; it then stores `xr` = now + min(bucket_ms, idle_ttl / 2).
-- The expiry is idle_ttl, but never earlier than open_until (open) or forced until (a forced
-- state with an expiry): a busy breaker never expires, nor a trip before its end.
local function save(create)
  if not EXISTS then
    if not create then return end
    set('st', S.st); set('g', S.g)
    TOUCH = true
  end
  if REFRESH_DUE then TOUCH = true end
  -- everything is computed and checked before the first write
  local ttl
  if TOUCH then
    local F = full()
    ttl = math.floor(F.ttl)
    if S.st == 'open' and S.ou - now > ttl then ttl = S.ou - now end
    if FORCED[S.st] and S.fu > 0 and S.fu - now > ttl then ttl = S.fu - now end
    -- PEXPIRE refuses what overflows (idle_ttl_ms >= 1e14 on Redis 7.0): refuse it here,
    -- before the first write, instead of after the others (about 95 years at most)
    if not (ttl >= 1 and ttl <= 3e12) then
      fail('the expiry (idle_ttl_ms, open or forced until) must be 1 ms .. 3e12 ms, got ' .. tostring(ttl))
    end
    -- the next refresh: min(bucket_ms, idle_ttl / 2) from now, and never later than the end of
    -- this bucket (so the record fast path, which returns early only before xr, needs no bucket
    -- check: it never skips a rotation)
    local every = math.floor(F.ttl / 2)
    if F.bms < every then every = F.bms end
    local xr = now + every
    local bucket_end = (S.be + 1) * F.bms
    if bucket_end < xr then xr = bucket_end end
    set('xr', xr)
  end
  local messages = {}
  if #EVENTS > 0 then
    local t = redis.call('TYPE', K_EVENTS)
    t = t.ok or t
    if t ~= 'none' and t ~= 'stream' then
      fail('WRONGTYPE ' .. K_EVENTS .. ' holds a ' .. t .. ', not a breaker event stream')
    end
    local svc = service()
    for i = 1, #EVENTS do
      local e = EVENTS[i]
      -- a forced state's expiry and reason are set after its transition: the last event has them
      local forced = i == #EVENTS and FORCED[e[2]] and S.st == e[2]
      messages[i] = cjson.encode({service = svc, from = e[1],
        to = e[2], generation = e[5], open_until = e[6], cause = e[3], actor = e[4], ts = now,
        forced_until = forced and S.fu or 0, reason = forced and (lazy('fr') or '') or e[3],
        kind = e[7] or 'transition'})
    end
  end
  local args = {}
  for f, v in pairs(W) do args[#args + 1] = f; args[#args + 1] = v end
  local dels = {}
  for f in pairs(D) do dels[#dels + 1] = f end
  -- PUBLISH first: an ACL that denies the channel fails the script here, with nothing written
  -- (subscribers act on a message only after this script has ended).
  if #messages > 0 then
    local channel = string.match(K_STATE, '^(.*):{[^{}]*}$') .. ':events'
    for i = 1, #messages do redis.call('PUBLISH', channel, messages[i]) end
  end
  -- in slices: unpack() of thousands of values fails ("too many results to unpack"), which
  -- must not happen between two writes
  for i = 1, #args, 400 do
    redis.call('HSET', K_STATE, unpack(args, i, math.min(i + 399, #args)))
  end
  for i = 1, #dels, 400 do
    redis.call('HDEL', K_STATE, unpack(dels, i, math.min(i + 399, #dels)))
  end
  for i = 1, #EVENTS do
    local e = EVENTS[i]
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 1000, '*', 'ts', now, 'from', e[1], 'to', e[2],
      'cause', e[3], 'actor', e[4], 'gen', e[5])
  end
  if TOUCH then
    redis.call('PEXPIRE', K_STATE, ttl)
    if redis.call('PEXPIRE', K_EVENTS, ttl) == 0 then
      -- No stream yet: create it, empty. A script names both keys, and while a Cluster slot
      -- migrates, a node that holds only one of them answers TRYAGAIN (the breaker would be
      -- unavailable until the migration ends).
      redis.call('XADD', K_EVENTS, 'MAXLEN', 0, '*', 'created', now)
      redis.call('PEXPIRE', K_EVENTS, ttl)
    end
  end
end

-- The full reply (the one definition of its layout; the lean reply is lean_reply() in _head.lua).
local function build_reply(st, g, ou, tc, tf, ts, cx, fu, reason, actor, oc, transitions, cause,
                           lease, retry_at, live, hs)
  return {st, g, now, ou, tc, tf, ts, cx, fu, reason, actor, oc, transitions, cause, lease,
          retry_at, live, hs}
end

local function reply(lease, retry_at)
  local fr, fa, live, hs = '', '', 0, 0
  if FORCED[S.st] then
    fr = lazy('fr') or ''; fa = lazy('fa') or ''
  elseif S.st == 'open' or S.st == 'half_open' then
    fr = lazy('lc') or ''  -- why it opened: the cause of the last transition
  end
  if S.st == 'half_open' then
    local list = leases()
    for i = 1, #list do if list[i][2] > now then live = live + 1 end end
    hs = lazy('hs')
  end
  return build_reply(S.st, S.g, (S.st == 'open') and S.ou or 0, S.tc, S.tf, S.ts, S.cx, S.fu,
    fr, fa, S.oc, table.concat(TRANS, ';'), LAST_CAUSE, lease, retry_at, live, hs)
end
