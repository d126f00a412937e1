-- spawn a task that does sleep(0) and returns, then await it; N times.
local lasync = require "lasync"
local N = tonumber(arg[1]) or 200000

lasync.run(function()
  local loop = lasync.get_loop()
  local t0 = loop:time()
  for _ = 1, N do
    lasync.spawn(function() lasync.sleep(0) end):await()
  end
  local dt = loop:time() - t0
  print(string.format("RESULT %d %.6f", N, dt))
end)
