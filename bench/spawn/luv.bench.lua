-- luv: the small hand-written scheduler in bench/lib/luvsched.lua (check+idle handles,
-- FIFO ready queue, tasks are futures).
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../lib/?.lua;" .. package.path
local sched = require "luvsched"
local N = tonumber(arg[1]) or 200000

sched.run(function()
  local t0 = sched.now()
  for _ = 1, N do
    sched.spawn(function() sched.sleep(0) end):await()
  end
  local dt = sched.now() - t0
  print(string.format("RESULT %d %.6f", N, dt))
end)
