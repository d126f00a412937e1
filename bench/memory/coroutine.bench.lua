-- baseline: a bare suspended Lua coroutine (coroutine.create + resume to a yield), kept
-- in a table exactly like the lasync version keeps its tasks.
-- Prints: RESULT <n> <seconds> <rss delta bytes> <lua heap delta bytes> <rss total bytes>
local N = tonumber(arg[1]) or 100000

local PAGE = tonumber(os.getenv("PAGESIZE")) or 4096
local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^%d+%s+(%d+)")) * PAGE
end
local function settle() collectgarbage(); collectgarbage() end

local function sleeper() coroutine.yield() end
local tasks = {}
settle()
local r0, l0 = rss(), collectgarbage("count") * 1024
local t0 = os.clock()
for i = 1, N do
  local co = coroutine.create(sleeper)
  coroutine.resume(co)
  tasks[i] = co
end
local dt = os.clock() - t0 -- CPU time: stock Lua has no wall clock; nothing blocks here
settle()
local r1, l1 = rss(), collectgarbage("count") * 1024
print(string.format("RESULT %d %.6f %d %d %d", N, dt, r1 - r0, math.floor(l1 - l0), r1))
