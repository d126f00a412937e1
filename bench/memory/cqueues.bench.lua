-- cqueues: N coroutines (cq:wrap) each in cqueues.sleep(3600).
-- Prints: RESULT <n> <seconds> <rss delta bytes> <lua heap delta bytes> <rss total bytes>
local cqueues = require "cqueues"
local N = tonumber(arg[1]) or 100000

local PAGE = tonumber(os.getenv("PAGESIZE")) or 4096
local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^%d+%s+(%d+)")) * PAGE
end
local function settle() collectgarbage(); collectgarbage() end

local cq = cqueues.new()
cq:wrap(function()
  local function sleeper() cqueues.sleep(3600) end
  local tasks = {}
  settle()
  local r0, l0 = rss(), collectgarbage("count") * 1024
  local t0 = cqueues.monotime()
  for i = 1, N do tasks[i] = cq:wrap(sleeper) end
  cqueues.sleep(0)
  local dt = cqueues.monotime() - t0
  settle()
  local r1, l1 = rss(), collectgarbage("count") * 1024
  print(string.format("RESULT %d %.6f %d %d %d", N, dt, r1 - r0, math.floor(l1 - l0), r1))
  io.stdout:flush()
  os.exit(0)
end)
assert(cq:loop())
