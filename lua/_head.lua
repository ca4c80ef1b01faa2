-- distbreaker/_head.lua: the first lines of every script (the loader prepends it).
-- The contract (fields, ARGV, steps, reply) is docs/state-machine.md; keep both in step.
--
-- KEYS[1]  <prefix>:{<service>}          hash: the breaker
-- KEYS[2]  <prefix>:{<service>}:events   stream: transitions
-- ARGV[1]  now (ms; '' = TIME)   ARGV[2] config fingerprint ('' = none: stored config or defaults)
-- ARGV[3 .. 2+NOP]  the script's own arguments (NOP of them)
-- ARGV[3+NOP .. 15+NOP]  the 13 config values, optional: sent only when the stored fingerprint
--                        differs (the script answers 'distbreaker: NOCONFIG' otherwise)
-- Time is in integer milliseconds in these scripts.
--
-- A script is: this head, its fast path (if any), then _lib.lua where it says --@lib, then
-- its general body. The head defines only what a fast path needs, so that the common call
-- does not pay for building the library's functions and tables.

local K_STATE, K_EVENTS = KEYS[1], KEYS[2]
local FP = ARGV[2] or ''

-- A plain string: Redis 6.2's error handler rejects error tables, and fakeredis drops their text.
local function fail(msg)
  error('distbreaker: ' .. msg)
end

local function num(i, name)
  local v = tonumber(ARGV[i])
  if v == nil then fail(name .. ' must be a number, got ' .. tostring(ARGV[i])) end
  return v
end

local now
if ARGV[1] ~= nil and ARGV[1] ~= '' then
  now = num(1, 'now')
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One HMGET of the hot fields (state, window totals, the config the hot path needs).
local h = redis.call('HMGET', K_STATE, 'st', 'g', 'ou', 'be', 'tc', 'tf', 'ts', 'c0', 'f0', 's0',
  'cx', 'fu', 'oc', 'fp', 'qb', 'qn', 'qr', 'qm', 'qc', 'qs')
