-- ping-pong between two tasks through futures: each round the main task resolves `ping`
-- (handing over a fresh `pong` future) and awaits `pong`; the peer task awaits `ping`,
-- makes the next `ping` and resolves `pong` with it.  Two futures, two resolves and two
-- task resumptions per round.
local lasync = require "lasync"
local N = tonumber(arg[1]) or 200000

lasync.run(function()
  local loop = lasync.get_loop()
  local ping = lasync.future()
  local peer = lasync.spawn(function(ping)
    for _ = 1, N do
      local pong = ping:await()
      ping = lasync.future()
      pong:set_result(ping)
    end
  end, ping)
  local t0 = loop:time()
  for _ = 1, N do
    local pong = lasync.future()
    ping:set_result(pong)
    ping = pong:await()
  end
  local dt = loop:time() - t0
  peer:await()
  print(string.format("RESULT %d %.6f", N, dt))
end)
