-- control.lua: operator actions.
-- ARGV[3] op: 'trip' | 'disable' | 'reset' | 'config'
-- ARGV[4] until (ms, absolute; 0 = no expiry; ignored by reset and config)
-- ARGV[5] reason; for 'config': the overrides 'name=value;name=value' ('' = clear them all)
-- ARGV[6] actor   ARGV[7..6+NCFG] config (optional)
-- Returns the reply of docs/state-machine.md.

--@lib

local op = ARGV[3]
local MAX_UNTIL_AHEAD_MS = 366 * 86400000
local untl = num(4, 'until')
local reason, actor = ARGV[5] or '', ARGV[6] or ''
if op ~= 'trip' and op ~= 'disable' and op ~= 'reset' and op ~= 'config' then
  fail("op must be 'trip', 'disable', 'reset' or 'config', got " .. tostring(op))
end
-- bounded before anything is written: a whole number of ms, at most 366 days ahead
if untl < 0 or untl ~= math.floor(untl) or untl - now > MAX_UNTIL_AHEAD_MS then
  fail('until must be 0 or a whole number of ms at most 366 days from now, got ' .. tostring(ARGV[4]))
end
local given
if op == 'config' then given = parse_ov(reason) end

-- Fleet-wide overrides: stored in `ov`, merged over the client config (`cc`, else `cfg`: `cc` is
-- stored only when it differs) into `cfg` and the
-- hot fields at once; a change of the bucket layout clears the window. Not a transition: an
-- event with from = to = the current state, and the generation unchanged.
local function set_overrides()
  local base = split(lazy('cc') or lazy('cfg') or DEFAULT_CFG)
  local values, parts = {unpack(base)}, {}
  for i = 1, NCFG do
    if given[i] then
      values[i] = given[i]
      parts[#parts + 1] = CFG_NAMES[i] .. '=' .. given[i]
    end
  end
  local new = parse_cfg(values)  -- an invalid result fails here, before anything is written
  if #parts > 0 then set('ov', table.concat(parts, ';')) else del('ov') end
  -- no config stored (lost): the fingerprint would name a config that is not this one, so it
  -- goes; the next worker is asked for its config and stores it (overrides applied)
  if lazy('cfg') == nil and S.fp ~= nil then del('fp') end
  store_config(base, values, new)
  local cause = 'config cleared by ' .. actor
  if #parts > 0 then cause = 'config set by ' .. actor .. ': ' .. table.concat(parts, ', ') end
  EVENTS[#EVENTS + 1] = {S.st, S.st, cause, actor, S.g, (S.st == 'open') and S.ou or 0, 'config'}
end

begin(4, op == 'reset')
if op == 'config' then
  set_overrides()
else
  local cause = 'manual ' .. op .. ' by ' .. actor
  if reason ~= '' then cause = cause .. ': ' .. reason end
  if REPAIRED then cause = cause .. ' (rewrote a corrupt breaker: ' .. table.concat(REPAIRED, ', ') .. ')' end
  if op == 'reset' then
    transition('closed', cause, actor, 'reset')
  else
    transition((op == 'trip') and 'forced_open' or 'disabled', cause, actor)
    set('fu', untl); set('fr', reason); set('fa', actor)
  end
end
save(true)
return reply('', 0)
