-- distbreaker/_head.lua: the first lines of every script (the loader prepends it).
-- The contract (fields, ARGV, steps, reply) is docs/state-machine.md; keep both in step.
--
-- KEYS[1]  <prefix>:{<service>}          hash: the breaker
-- KEYS[2]  <prefix>:{<service>}:events   stream: transitions
-- ARGV[1]  now (ms; '' = TIME)   ARGV[2] config fingerprint ('' = none: stored config or defaults)
-- ARGV[3 .. 2+NOP]  the script's own arguments (NOP of them)
-- ARGV[3+NOP .. 2+NOP+NCFG]  the NCFG (15) config values, optional: sent only when the stored
--                        fingerprint differs (the script answers 'distbreaker: NOCONFIG' otherwise)
-- Time is in integer milliseconds in these scripts.
--
-- A script is: this head, its fast path (if any), then _lib.lua where it says --@lib, then
-- its general body. The head defines what a fast path needs (the trip predicate, the TTL
-- rule, the lean reply), so that the common call does not pay for building the library's
-- functions and tables, and so that the fast path and the general path share one definition
-- of each. Every function defined here is a closure built on every call: the head keeps
-- to the ones a fast path calls.

--@schema-head
local K_STATE, K_EVENTS = KEYS[1], KEYS[2]
local FP = ARGV[2] or ''

local now
if ARGV[1] ~= nil and ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
  if now == nil then error('distbreaker: now must be a number, got ' .. ARGV[1]) end
else
  local t = redis.call('TIME')  -- (two texts of digits: arithmetic converts them, ~0.5 µs less than tonumber)
  now = t[1] * 1000 + math.floor(t[2] / 1000)
end

-- The hot fields (state, window totals, the hot config, the TTL refresh time) into named locals
-- H_<field>: the raw values (false = absent). docs/state-machine.md "Hash fields". The line below
-- is generated when the scripts are loaded (distbreaker/_scripts.py, HOT_FIELDS): one HMGET of
-- them all, or, for a script with a `--@fast-path-reads` line (a fast path that uses only some), one of
-- those and `st g fp xr` here and one of the rest where the library begins (until then they are nil).
--@head-read

-- THE TRIP PREDICATE (the one definition; docs/state-machine.md "Trip check"): the cause when
-- a closed breaker with these window totals and consecutive failures must open, else nil.
-- frt, min, cxn, srt: failure_rate_threshold, minimum_calls, consecutive_failures,
-- slow_call_rate_threshold; wmin: minimum_failing_workers (0 or nil = off) and fw the failing
-- clients in the window. The quorum only holds a trip back: a caller that does not read it
-- (the record fast path) passes nil, and must take any cause it gets to the general path.
local function trip_cause(tc, tf, ts, cx, frt, min, cxn, srt, fw, wmin)
  local cause = nil
  if cxn > 0 and cx >= cxn then
    cause = 'consecutive_failures ' .. cx .. ' >= ' .. cxn
  elseif tc >= min then
    if tf / tc >= frt then
      cause = string.format('failure_rate %.2f >= %.2f over %d calls', tf / tc, frt, tc)
    elseif ts > 0 and ts / tc >= srt then
      cause = string.format('slow_call_rate %.2f >= %.2f over %d calls', ts / tc, srt, tc)
    end
  end
  if cause and wmin and wmin > 0 then
    if fw < wmin then return nil end
    cause = cause .. ' from ' .. fw .. ' failing clients'
  end
  return cause
end

-- THE TTL RULE, part 1 (part 2 is save() in _lib.lua): a script that saves refreshes the keys'
-- expiry when the refresh is due: `xr` (the raw field: the time the next refresh is due, stored
-- with each refresh, never later than the end of the current bucket) is absent, not a number or
-- passed. A fast path may only return early while it is not: so it never skips a rotation either.
-- (A value, not a function: a closure built on every call costs more than this one test.)
local REFRESH_DUE = tonumber(H_xr)
REFRESH_DUE = REFRESH_DUE == nil or now >= REFRESH_DUE

-- THE REPLY BUILDERS (the one definition of each layout; docs/state-machine.md "Reply").
-- The lean reply: a record that made no transition and leaves the breaker closed (the common
-- call) says only this; the client knows the rest (closed: no open_until, no forced state, no
-- reason). Its fields are the full reply's first three. The full reply, which only the general
-- path builds, is build_reply() in _lib.lua.
local function lean_reply(st, g)
  return {st, g, now}
end
