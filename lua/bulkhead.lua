-- bulkhead.lua: a fleet-wide bulkhead (distbreaker/bulkhead.py, docs/bulkhead.md).
-- At most `max_concurrent` leases live at once across every process; a lease expires at its
-- expiry time, so the slot of a worker that died comes back without anyone releasing it.
-- A standalone script: no breaker head or library (the loader reads it as it is).
--
-- KEYS[1]  <prefix>:{<name>}:bulkhead   ZSET: lease id -> expiry (ms); the members 'max' and
--                                       'lease' hold -max_concurrent and -lease_timeout (ms) of
--                                       the last grant (negative: never a lease)
-- ARGV[1]  op: 'acquire' | 'release' | 'renew' | 'read'
-- ARGV[2]  now (ms; '' = TIME)
-- acquire  ARGV[3] max_concurrent, ARGV[4] lease_timeout (ms), ARGV[5] lease id
--          -> {granted 1|0, leases live after it, earliest live expiry (ms, 0 = none), now}
-- release  ARGV[3] lease id              -> {1 released | 0 not held (expired or unknown)}
-- renew    ARGV[3] lease_timeout (ms), ARGV[4] lease id
--          -> {1 | 0 (the lease had expired: not revived), the new expiry (ms, 0 = none)}
-- read     -> {leases live, max_concurrent of the last grant (0 = unknown), earliest expiry, now,
--              lease_timeout (ms) of the last grant (0 = unknown)}
-- Time is in integer milliseconds. Expired leases are pruned by every acquire (ZREMRANGEBYSCORE
-- 0 now); read counts only live ones and writes nothing. The key expires IDLE ms after the last
-- grant (an unused bulkhead leaves nothing behind). distbreaker.bulkhead.read_steps reads the
-- same set with plain commands (the exporter, `distbreaker bulkheads`): keep the two in step.
-- Every argument is validated before the first write; errors start with 'distbreaker:'.

local K = KEYS[1]
local MAX_CONCURRENT = 100000
local MAX_LEASE = 86400000 -- 1 day
local IDLE = 604800000 -- 7 days

local function fail(msg)
  error('distbreaker: ' .. msg)
end

local function int(i, name, lo, hi)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= math.floor(v) or v < lo or v > hi then
    fail(name .. ' must be an integer in [' .. lo .. ', ' .. hi .. '], got ' .. tostring(ARGV[i]))
  end
  return v
end

local function lease_id(i)
  local id = ARGV[i]
  if id == nil or id == '' or #id > 128 or id == 'max' or id == 'lease' then
    fail('lease id must be 1-128 bytes other than "max" and "lease", got ' .. tostring(id))
  end
  return id
end

local op = ARGV[1]
if op ~= 'acquire' and op ~= 'release' and op ~= 'renew' and op ~= 'read' then
  fail('bulkhead op must be acquire, release, renew or read, got ' .. tostring(op))
end

local now
if ARGV[2] ~= nil and ARGV[2] ~= '' then
  now = int(2, 'now', 0, 1e15)
else
  local t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)  -- (as _head.lua: arithmetic converts TIME's texts)
end

local function ms(v)
  return string.format('%d', v)
end

-- the earliest expiry among live leases (0 = none)
local function earliest()
  local first = redis.call('ZRANGEBYSCORE', K, '(' .. ms(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if first[2] then return tonumber(first[2]) end
  return 0
end

if op == 'acquire' then
  local max = int(3, 'max_concurrent', 1, MAX_CONCURRENT)
  local lease = int(4, 'lease_timeout', 1, MAX_LEASE)
  local id = lease_id(5)
  redis.call('ZREMRANGEBYSCORE', K, 0, ms(now))
  local live = redis.call('ZCOUNT', K, '(0', '+inf')
  if live < max then
    redis.call('ZADD', K, -max, 'max', -lease, 'lease', ms(now + lease), id)
    redis.call('PEXPIRE', K, IDLE)
    return {1, live + 1, 0, now}
  end
  return {0, live, earliest(), now}
end

if op == 'release' then
  return {redis.call('ZREM', K, lease_id(3))}
end

if op == 'renew' then
  local lease = int(3, 'lease_timeout', 1, MAX_LEASE)
  local id = lease_id(4)
  local expiry = tonumber(redis.call('ZSCORE', K, id))
  if expiry == nil then return {0, 0} end
  if expiry <= now then
    redis.call('ZREM', K, id)
    return {0, 0}
  end
  redis.call('ZADD', K, ms(now + lease), id)
  return {1, now + lease}
end

-- read
local live = redis.call('ZCOUNT', K, '(' .. ms(now), '+inf')
local max = tonumber(redis.call('ZSCORE', K, 'max')) or 0
local lease = tonumber(redis.call('ZSCORE', K, 'lease')) or 0
return {live, -max, earliest(), now, -lease}
