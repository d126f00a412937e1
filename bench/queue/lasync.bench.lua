-- lasync: lasync.Queue (lua/lasync/sync.lua).
--   pingpong: two tasks, two unbounded queues; per round one put+get each way.
--   pipeline: producer -> Queue(64) -> worker (x*2) -> Queue(64) -> consumer, N items.
-- Usage: lua5.4 lasync.bench.lua N pingpong|pipeline   -> RESULT <ops> <seconds>
local lasync = require "lasync"
local N = tonumber(arg[1]) or 200000
local mode = arg[2] or "pingpong"

lasync.run(function()
  local loop = lasync.get_loop()
  local t0, dt
  if mode == "pingpong" then
    local q1, q2 = lasync.Queue(), lasync.Queue()
    local peer = lasync.spawn(function()
      for _ = 1, N do q2:put(q1:get()) end
    end)
    t0 = loop:time()
    for i = 1, N do
      q1:put(i)
      assert(q2:get() == i)
    end
    dt = loop:time() - t0
    peer:await()
  else
    local q1, q2 = lasync.Queue(64), lasync.Queue(64)
    t0 = loop:time()
    local producer = lasync.spawn(function()
      for i = 1, N do q1:put(i) end
    end)
    local worker = lasync.spawn(function()
      for _ = 1, N do q2:put(q1:get() * 2) end
    end)
    local sum = 0
    for _ = 1, N do sum = sum + q2:get() end
    dt = loop:time() - t0
    producer:await(); worker:await()
    assert(sum == N * (N + 1))
  end
  print(("RESULT %d %.6f"):format(N, dt))
end)
