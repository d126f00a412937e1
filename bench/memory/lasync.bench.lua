-- memory per task sleeping on a timer: spawn N tasks that each do lasync.sleep(3600),
-- let them all start (one sleep(0) in the main task), then measure.
-- Prints: RESULT <n> <seconds to spawn+park> <rss delta bytes> <lua heap delta bytes> <rss total bytes>
-- RSS (from /proc/self/statm) counts everything, including the C core's own allocations;
-- collectgarbage("count") counts only what goes through Lua's allocator.
local lasync = require "lasync"
local N = tonumber(arg[1]) or 100000

local PAGE = tonumber(os.getenv("PAGESIZE")) or 4096
local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^%d+%s+(%d+)")) * PAGE
end
local function settle() collectgarbage(); collectgarbage() end

lasync.run(function()
  local loop = lasync.get_loop()
  local function sleeper() lasync.sleep(3600) end
  local tasks = {}
  settle()
  local r0, l0 = rss(), collectgarbage("count") * 1024
  local t0 = loop:time()
  for i = 1, N do tasks[i] = lasync.spawn(sleeper) end
  lasync.sleep(0) -- every task runs its first step and parks on its timer
  local dt = loop:time() - t0
  settle()
  local r1, l1 = rss(), collectgarbage("count") * 1024
  print(string.format("RESULT %d %.6f %d %d %d", N, dt, r1 - r0, math.floor(l1 - l0), r1))
  io.stdout:flush()
  -- returning lets lasync.run cancel and finish the N leftover tasks (part of the run)
end)
