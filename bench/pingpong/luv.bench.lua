-- luv: the hand-written scheduler in bench/lib/luvsched.lua, its futures.
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../lib/?.lua;" .. package.path
local sched = require "luvsched"
local N = tonumber(arg[1]) or 200000

sched.run(function()
  local ping = sched.future()
  local peer = sched.spawn(function()
    local ping = ping
    for _ = 1, N do
      local pong = ping:await()
      ping = sched.future()
      pong:set_result(ping)
    end
  end)
  local t0 = sched.now()
  for _ = 1, N do
    local pong = sched.future()
    ping:set_result(pong)
    ping = pong:await()
  end
  local dt = sched.now() - t0
  peer:await()
  print(string.format("RESULT %d %.6f", N, dt))
end)
