-- distbreaker/_lib.lua: the general path shared by every script, inserted at its --@lib line
-- after _head.lua (which defined K_STATE, K_EVENTS, FP, fail, num, now and h = the hot HMGET).
-- docs/state-machine.md is the contract.

local EXISTS = h[1] ~= false
local S = {st = h[1] or 'closed', g = tonumber(h[2]) or 0, ou = tonumber(h[3]) or 0,
  be = tonumber(h[4]), tc = tonumber(h[5]) or 0, tf = tonumber(h[6]) or 0,
  ts = tonumber(h[7]) or 0, c0 = tonumber(h[8]) or 0, f0 = tonumber(h[9]) or 0,
  s0 = tonumber(h[10]) or 0, cx = tonumber(h[11]) or 0, fu = tonumber(h[12]) or 0,
  oc = tonumber(h[13]) or 0, fp = h[14] or nil}
local loaded = {}   -- lazily read fields
local W = {}        -- fields to HSET
local D = {}        -- fields to HDEL
local EVENTS = {}   -- transitions to XADD / PUBLISH on save
local TRANS = {}    -- 'from>to' made by this call
local LAST_CAUSE = ''
local TOUCH = false -- refresh the idle TTL on save

local LAZY_NUMERIC = {oa = true, hs = true, hn = true, lt = true, pt = true}

local function lazy(f)
  if not loaded[f] then
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
local CFG_INDEX = {}
for i = 1, 13 do CFG_INDEX[CFG_NAMES[i]] = i end

-- The 13 values (text) -> the parsed config; fails on a value out of bounds (nothing written yet).
local function parse_cfg(values)
  local c = {}
  for i = 1, 13 do
    local v = tonumber(values[i])
    if v == nil then fail(CFG_NAMES[i] .. ' must be a number, got ' .. tostring(values[i])) end
    c[i] = v
  end
  check_cfg(c, values)
  return {frt = c[1], min = c[2], nb = c[4], cxn = c[5], srt = c[6], bms = math.floor(c[3] / c[4]),
    open = c[7], mult = c[8], maxo = c[9], hmax = c[10], hsucc = c[11], probe = c[12], ttl = c[13],
    full = true}
end

local function split(s)
  local out = {}
  for v in string.gmatch(s, '[^,]+') do out[#out + 1] = v end
  return out
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

-- The 13 values of a config with the stored overrides applied, and the parsed config.
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

local function full()
  if not C.full then
    local F = parse_cfg(split(lazy('cfg') or DEFAULT_CFG))
    for k, v in pairs(C) do F[k] = v end
    F.full = true
    C = F
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
        tc = tc - tonumber(c); tf = tf - tonumber(f); ts = ts - tonumber(s)
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

-- Transitions: the one place where the state changes ------------------------------------------
local FORCED = {forced_open = true, disabled = true}

-- kind: 'reset' clears everything; otherwise the target state decides.
local function transition(to, cause, actor, kind)
  local from = S.st
  local allowed = {
    closed = {open = true, forced_open = true, disabled = true, closed = true},
    open = {half_open = true, forced_open = true, disabled = true, closed = true},
    half_open = {open = true, closed = true, forced_open = true, disabled = true},
    forced_open = {closed = true, forced_open = true, disabled = true},
    disabled = {closed = true, forced_open = true, disabled = true},
  }
  if not (allowed[from] and allowed[from][to]) then
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
    set('hl', ''); set('hs', 0)
  elseif to == 'closed' and (from == 'half_open' or kind == 'reset') then
    clear_window(); set('oc', 0); set('cx', 0); set('hl', ''); set('hs', 0)
  end
  set('lt', now); set('lf', from); set('lc', cause); set('la', actor)
  TRANS[#TRANS + 1] = from .. '>' .. to
  LAST_CAUSE = cause
  EVENTS[#EVENTS + 1] = {from, to, cause, actor, S.g, (to == 'open') and S.ou or 0}
end

-- The steps every script runs first (docs/state-machine.md, "Steps") ---------------------------
local function begin(nop)
  local base = 2 + nop
  if ARGV[base + 13] ~= nil then
    -- config given: authoritative for this call (operator overrides win over it), stored
    -- when the fingerprint changed
    local given = {unpack(ARGV, base + 1, base + 13)}
    local values
    values, C = with_overrides(given)
    if FP ~= '' and S.fp ~= FP then
      local ob, on = tonumber(h[15]) or DEFAULT_BMS, tonumber(h[16]) or DEFAULT_NB
      if S.fp then set('pf', S.fp); set('pt', now) end
      set('fp', FP); set('cc', table.concat(given, ',')); set('cfg', table.concat(values, ','))
      set('qb', C.bms); set('qn', C.nb); set('qr', values[1]); set('qm', C.min)
      set('qc', C.cxn); set('qs', values[6])
      if S.be ~= nil and (ob ~= C.bms or on ~= C.nb) then
        clear_ring(on); clear_window()
      end
    end
  elseif FP ~= '' and S.fp ~= FP then
    fail('NOCONFIG')
  elseif h[15] then
    C = {bms = tonumber(h[15]), nb = tonumber(h[16]), frt = tonumber(h[17]),
         min = tonumber(h[18]), cxn = tonumber(h[19]), srt = tonumber(h[20])}
  else
    C = parse_cfg(split(DEFAULT_CFG))
  end
  if FORCED[S.st] and S.fu > 0 and now >= S.fu then
    transition('closed', S.st .. ' expired', '')
  end
  if S.st == 'open' and now >= S.ou then
    transition('half_open', 'open_duration elapsed', '')
  end
  rotate()
end

local function save(create)
  if not EXISTS then
    if not create then return end
    set('st', S.st); set('g', S.g)
    TOUCH = true
  end
  if #EVENTS > 0 then
    local t = redis.call('TYPE', K_EVENTS)
    t = t.ok or t
    if t ~= 'none' and t ~= 'stream' then
      fail('WRONGTYPE ' .. K_EVENTS .. ' holds a ' .. t .. ', not a breaker event stream')
    end
  end
  local args = {}
  for f, v in pairs(W) do args[#args + 1] = f; args[#args + 1] = v end
  if #args > 0 then redis.call('HSET', K_STATE, unpack(args)) end
  local dels = {}
  for f in pairs(D) do dels[#dels + 1] = f end
  if #dels > 0 then redis.call('HDEL', K_STATE, unpack(dels)) end
  if #EVENTS > 0 then
    local prefix, service = string.match(K_STATE, '^(.*):{([^{}]*)}$')
    for i = 1, #EVENTS do
      local e = EVENTS[i]
      redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 1000, '*', 'ts', now, 'from', e[1], 'to', e[2],
        'cause', e[3], 'actor', e[4], 'gen', e[5])
      -- a forced state's expiry and reason are set after its transition: the last event has them
      local forced = i == #EVENTS and FORCED[e[2]] and S.st == e[2]
      redis.call('PUBLISH', prefix .. ':events', cjson.encode({service = service, from = e[1],
        to = e[2], generation = e[5], open_until = e[6], cause = e[3], actor = e[4], ts = now,
        forced_until = forced and S.fu or 0, reason = forced and (lazy('fr') or '') or e[3],
        kind = e[7] or 'transition'}))
    end
  end
  if TOUCH then
    local ttl = full().ttl
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
  return {S.st, S.g, now, (S.st == 'open') and S.ou or 0, S.tc, S.tf, S.ts, S.cx, S.fu, fr, fa,
          S.oc, table.concat(TRANS, ';'), LAST_CAUSE, lease, retry_at, live, hs}
end
