-- cqueues: hand-rolled futures = a table {done, value} + a condition variable (the
-- join idiom); faster than cqueues.promise (cqueues_promise.bench.lua), so this is the peer.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local N = tonumber(arg[1]) or 200000

local function future() return { done = false, cond = condition.new() } end
local function set_result(f, v) f.done, f.value = true, v; f.cond:signal() end
local function await(f)
  while not f.done do f.cond:wait() end
  return f.value
end

local cq = cqueues.new()
cq:wrap(function()
  local ping = future()
  local finished = future()
  cq:wrap(function(ping)
    for _ = 1, N do
      local pong = await(ping)
      ping = future()
      set_result(pong, ping)
    end
    set_result(finished, true)
  end, ping)
  local t0 = cqueues.monotime()
  for _ = 1, N do
    local pong = future()
    set_result(ping, pong)
    ping = await(pong)
  end
  local dt = cqueues.monotime() - t0
  await(finished)
  print(string.format("RESULT %d %.6f", N, dt))
end)
assert(cq:loop())
