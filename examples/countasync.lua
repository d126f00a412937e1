-- Seed 004's countasync.py, ported to lasync: three counters sleep concurrently, so the
-- whole run takes about one second, not three. Run: lua5.4 examples/countasync.lua
local lasync = require "lasync"

local function count()
  print("One")
  lasync.sleep(1)
  print("Two")
end

local t0
lasync.run(function()
  t0 = lasync.get_loop():time()
  lasync.gather(count, count, count)
  io.stderr:write(("countasync.lua executed in %0.2f seconds.\n"):format(lasync.get_loop():time() - t0))
end)
