-- cqueues: cq:wrap spawns the coroutine; a condition variable + done flag is the join.
-- (Faster than cqueues.promise, see cqueues_promise.bench.lua, so this is the peer.)
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local N = tonumber(arg[1]) or 200000

local cq = cqueues.new()
cq:wrap(function()
  local t0 = cqueues.monotime()
  for _ = 1, N do
    local done, cond = false, condition.new()
    cq:wrap(function() cqueues.sleep(0); done = true; cond:signal() end)
    if not done then cond:wait() end
  end
  local dt = cqueues.monotime() - t0
  print(string.format("RESULT %d %.6f", N, dt))
end)
assert(cq:loop())
