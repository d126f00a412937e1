-- luv scheduler (bench/lib/luvsched.lua): N tasks each parked on its own uv timer.
-- Prints: RESULT <n> <seconds> <rss delta bytes> <lua heap delta bytes> <rss total bytes>
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../lib/?.lua;" .. package.path
local sched = require "luvsched"
local N = tonumber(arg[1]) or 100000

local PAGE = tonumber(os.getenv("PAGESIZE")) or 4096
local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^%d+%s+(%d+)")) * PAGE
end
local function settle() collectgarbage(); collectgarbage() end

sched.run(function()
  local function sleeper() sched.sleep(3600) end
  local tasks = {}
  settle()
  local r0, l0 = rss(), collectgarbage("count") * 1024
  local t0 = sched.now()
  for i = 1, N do tasks[i] = sched.spawn(sleeper) end
  sched.sleep(0)
  local dt = sched.now() - t0
  settle()
  local r1, l1 = rss(), collectgarbage("count") * 1024
  print(string.format("RESULT %d %.6f %d %d %d", N, dt, r1 - r0, math.floor(l1 - l0), r1))
  io.stdout:flush()
  os.exit(0) -- the timers would keep the loop alive for an hour
end)
