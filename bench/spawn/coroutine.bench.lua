-- The floor, not a scheduler: what Lua itself charges for the coroutines a spawn benchmark
-- makes. Each op creates a coroutine running a fresh closure that yields once (the
-- sleep(0)), and resumes it twice (start, then finish), with nothing scheduling it.
-- Prints: RESULT <n> <seconds> (CPU time: stock Lua has no wall clock; nothing blocks)
local N = tonumber(arg[1]) or 200000
local yield, create, resume = coroutine.yield, coroutine.create, coroutine.resume
local t0 = os.clock()
for _ = 1, N do
  local co = create(function() yield() end)
  resume(co)
  resume(co)
end
print(string.format("RESULT %d %.6f", N, os.clock() - t0))
