-- cqueues: no queue in the library; this is the queue a cqueues user writes: a FIFO
-- table plus condition variables for "not empty" and (bounded) "not full".
-- Usage: lua5.4 cqueues.bench.lua N pingpong|pipeline   -> RESULT <ops> <seconds>
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local N = tonumber(arg[1]) or 200000
local mode = arg[2] or "pingpong"

local Queue = {}
Queue.__index = Queue
local function new_queue(max)
  return setmetatable({h = 1, t = 0, max = max or math.huge,
    nonempty = condition.new(), nonfull = condition.new()}, Queue)
end
function Queue:put(v)
  while self.t - self.h + 1 >= self.max do self.nonfull:wait() end
  self.t = self.t + 1
  self[self.t] = v
  self.nonempty:signal(1)
end
function Queue:get()
  while self.t < self.h do self.nonempty:wait() end
  local v = self[self.h]
  self[self.h] = nil
  self.h = self.h + 1
  self.nonfull:signal(1)
  return v
end

local cq = cqueues.new()
cq:wrap(function()
  local t0, dt
  local finished = condition.new()
  local left = 0
  local function spawn(fn)
    left = left + 1
    cq:wrap(function() fn(); left = left - 1; finished:signal() end)
  end
  if mode == "pingpong" then
    local q1, q2 = new_queue(), new_queue()
    spawn(function() for _ = 1, N do q2:put(q1:get()) end end)
    t0 = cqueues.monotime()
    for i = 1, N do
      q1:put(i)
      assert(q2:get() == i)
    end
    dt = cqueues.monotime() - t0
  else
    local q1, q2 = new_queue(64), new_queue(64)
    t0 = cqueues.monotime()
    spawn(function() for i = 1, N do q1:put(i) end end)
    spawn(function() for _ = 1, N do q2:put(q1:get() * 2) end end)
    local sum = 0
    for _ = 1, N do sum = sum + q2:get() end
    dt = cqueues.monotime() - t0
    assert(sum == N * (N + 1))
  end
  while left > 0 do finished:wait() end
  print(string.format("RESULT %d %.6f", N, dt))
end)
assert(cq:loop())
