-- control.lua: operator actions.
-- ARGV[3] op: 'trip' | 'disable' | 'reset'   ARGV[4] until (ms, absolute; 0 = no expiry)
-- ARGV[5] reason   ARGV[6] actor   ARGV[7..19] config (optional)
-- Returns the reply of docs/state-machine.md.

--@lib

local op = ARGV[3]
local untl = num(4, 'until')
local reason, actor = ARGV[5] or '', ARGV[6] or ''
if op ~= 'trip' and op ~= 'disable' and op ~= 'reset' then
  fail("op must be 'trip', 'disable' or 'reset', got " .. tostring(op))
end
if untl < 0 then fail('until must be >= 0') end

begin(4)
local cause = 'manual ' .. op .. ' by ' .. actor
if reason ~= '' then cause = cause .. ': ' .. reason end
if op == 'reset' then
  transition('closed', cause, actor, 'reset')
else
  transition((op == 'trip') and 'forced_open' or 'disabled', cause, actor)
  set('fu', untl); set('fr', reason); set('fa', actor)
end
save(true)
return reply('', 0)
