-- Scale: many waiters, deep chains, many timers (no C stack overflow, one-iteration wakeups).
local lasync = require "lasync"
local async = require "lasync.busted"

local iteration_counter = async.iteration_counter

describe("many waiters", function()
  it("10,000 tasks waiting on one future are all woken in one iteration", async({timeout = 60}, function()
    local N = 10000
    local f = lasync.future()
    local woke_at, values = {}, {}
    local c = iteration_counter()
    local tasks = {}
    for i = 1, N do
      tasks[i] = lasync.spawn(function()
        local v = f:await()
        woke_at[i] = c.n
        values[i] = v
      end)
    end
    lasync.sleep(0) -- all of them start and suspend on f
    lasync.sleep(0)
    for i = 1, N do assert(not tasks[i]:done(), "a task finished before the future") end
    local set_at
    lasync.get_loop():call_soon(function()
      set_at = c.n
      f:set_result("go")
    end)
    tasks[N]:await()
    for i = 1, N do tasks[i]:await() end
    c.stop()
    local first = woke_at[1]
    assert.is_number(first)
    assert.is_true(first - set_at <= 1, ("woke %d iterations after set_result"):format(first - set_at))
    for i = 1, N do
      if woke_at[i] ~= first then
        error(("task %d woke at iteration %s, task 1 at %d"):format(i, tostring(woke_at[i]), first))
      end
      if values[i] ~= "go" then error("task " .. i .. " got " .. tostring(values[i])) end
    end
  end))

  it("10,000 tasks awaiting one task get its several results", async({timeout = 60}, function()
    local N = 10000
    local src = lasync.spawn(function()
      lasync.sleep(0.01)
      return 1, nil, 3
    end)
    local ok = 0
    local ts = {}
    for i = 1, N do
      ts[i] = lasync.spawn(function()
        local a, b, c = src:await()
        if a == 1 and b == nil and c == 3 then ok = ok + 1 end
      end)
    end
    for i = 1, N do ts[i]:await() end
    assert.equals(N, ok)
  end))

  it("100,000 call_soon callbacks run in FIFO order", async({timeout = 60}, function()
    local loop = lasync.get_loop()
    local N = 100000
    local last, bad = 0, 0
    for i = 1, N do
      loop:call_soon(function()
        if i ~= last + 1 then bad = bad + 1 end
        last = i
      end)
    end
    lasync.sleep(0)
    assert.equals(N, last)
    assert.equals(0, bad)
  end))

  it("5,000 sleepers wake in deadline order", async({timeout = 60}, function()
    local N = 5000
    local order = {}
    local ts = {}
    -- deadlines 1..N ms spread over a shuffled spawn order
    local idx = {}
    for i = 1, N do idx[i] = i end
    local seed = 12345
    for i = N, 2, -1 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local j = seed % i + 1
      idx[i], idx[j] = idx[j], idx[i]
    end
    local loop = lasync.get_loop()
    -- Far enough ahead that every first step runs before the earliest deadline, even under
    -- the sanitizers: a sleeper whose deadline passed before it started cannot wake first.
    local start = loop:time() + 0.5
    for k = 1, N do
      local d = idx[k]
      ts[k] = lasync.spawn(function()
        -- absolute deadlines 0.1 ms apart: the tasks start at slightly different times
        lasync.sleep(start + d * 0.0001 - loop:time())
        order[#order + 1] = d
      end)
    end
    for k = 1, N do ts[k]:await() end
    assert.equals(N, #order)
    for i = 2, N do
      if order[i] < order[i - 1] then
        error(("sleeper %d woke before %d"):format(order[i - 1], order[i]))
      end
    end
  end))
end)

describe("deep chains", function()
  it("a 5,000-deep chain of tasks each awaiting the next propagates the result", async({timeout = 60}, function()
    local DEPTH = 5000
    local function level(n)
      if n == 0 then
        lasync.sleep(0)
        return 0, "leaf"
      end
      local v, tag = lasync.spawn(level, n - 1):await()
      return v + 1, tag
    end
    local v, tag = lasync.spawn(level, DEPTH):await()
    assert.equals(DEPTH, v)
    assert.equals("leaf", tag)
  end))

  it("a 5,000-deep chain built up front, completed from the far end", async({timeout = 60}, function()
    local DEPTH = 5000
    local tasks = {}
    local leaf = lasync.future()
    tasks[DEPTH + 1] = leaf
    for i = DEPTH, 1, -1 do
      local nxt = tasks[i + 1]
      tasks[i] = lasync.spawn(function() return nxt:await() + 1 end)
    end
    lasync.sleep(0)
    leaf:set_result(0)
    assert.equals(DEPTH, tasks[1]:await())
  end))

  it("an error propagates up a 5,000-deep chain", async({timeout = 60}, function()
    local DEPTH = 5000
    local function level(n)
      if n == 0 then
        lasync.sleep(0)
        error({tag = "bottom"})
      end
      return lasync.spawn(level, n - 1):await()
    end
    local t = lasync.spawn(level, DEPTH)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.equals("bottom", e.tag)
  end))

  it("cancelling the top of a 5,000-deep chain cancels every task in it", async({timeout = 60}, function()
    local DEPTH = 5000
    local all = {}
    local leaf_cancelled = false
    local function level(n)
      if n == 0 then
        local ok, e = pcall(lasync.sleep, 1000)
        leaf_cancelled = lasync.is_cancelled(e)
        error(e, 0)
      end
      local t = lasync.spawn(level, n - 1)
      all[#all + 1] = t
      return t:await()
    end
    local top = lasync.spawn(level, DEPTH)
    while #all < DEPTH do lasync.sleep(0) end
    lasync.sleep(0)
    top:cancel()
    local ok, e = pcall(top.await, top)
    assert.is_false(ok)
    assert.is_true(lasync.is_cancelled(e))
    for i = 1, #all do
      local t = all[i]
      if not t:done() then t:await() end
      if not t:cancelled() then error("task " .. i .. " of the chain was not cancelled") end
    end
    assert.is_true(leaf_cancelled)
  end))

  it("a 5,000-deep chain of futures resolved from done callbacks", async({timeout = 60}, function()
    local DEPTH = 5000
    local futs = {}
    for i = 1, DEPTH do futs[i] = lasync.future() end
    for i = 1, DEPTH - 1 do
      futs[i]:add_done_callback(function(f) futs[i + 1]:set_result(f:result() + 1) end)
    end
    futs[1]:set_result(1)
    assert.equals(DEPTH, futs[DEPTH]:await())
  end))

  it("deep recursion of plain calls inside one task, awaiting at the bottom", async(function()
    local function rec(n)
      if n == 0 then
        local f = lasync.future()
        lasync.get_loop():call_soon(f.set_result, f, 0)
        return f:await()
      end
      return rec(n - 1) + 1
    end
    assert.equals(10000, rec(10000))
  end))
end)
