-- Seed 001, "asyncio ensure_future", ported to lasync.
-- 1. A spawned task starts as soon as the loop next runs, even if nobody awaits it.
-- 2. A callee that blocks (a busy wait standing in for time.sleep) never gives the loop
--    control, so its caller finishes before the other task gets a turn; a callee that
--    awaits a real suspension point (sleep) lets the two tasks interleave.
-- Run: lua5.4 examples/ensure_future.lua
local lasync = require "lasync"

local function coroutine_body()
  print("Initialize coroutine")
  lasync.sleep(0.1)
  print("Done !")
end

local function block(seconds) -- stands in for time.sleep: the loop is stuck meanwhile
  local deadline = os.clock() + seconds
  while os.clock() < deadline do end
end

local function run_callers(callee2)
  local function callee1(i) lasync.sleep(0.02); print("called " .. i) end
  local function caller1() for i = 1, 3 do callee1(i) end end
  local function caller2() for i = 1, 3 do callee2(i) end end
  local task1 = lasync.spawn(caller1)
  local task2 = lasync.spawn(caller2)
  task1:await()
  task2:await()
end

lasync.run(function()
  lasync.spawn(coroutine_body) -- never awaited
  print("spawned, not awaited; the main task sleeps")
  lasync.sleep(0.2)

  print("-- callee2 blocks:")
  run_callers(function(i) block(0.02); print("sync called " .. i) end)
  print("-- callee2 awaits sleep:")
  run_callers(function(i) lasync.sleep(0.02); print("sync called " .. i) end)
end)
