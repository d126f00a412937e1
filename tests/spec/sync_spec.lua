-- Synchronisation primitives: Queue, Event, Lock, Semaphore, Condition (lua/lasync/sync.lua).
local lasync = require "lasync"
local async = require "lasync.busted"

-- Gives up n loop iterations.
local function ticks(n)
  for _ = 1, n or 1 do lasync.sleep(0) end
end

-- Runs fn(...) in a task and returns the task; the task's error (if any) is retrieved by the
-- caller with outcome().
local function go(fn, ...) return lasync.spawn(fn, ...) end

-- "ok", values | "cancelled" | "error", err -- for a finished task.
local function outcome(t)
  assert(t:done(), "task not finished")
  if t:cancelled() then return "cancelled" end
  local e = t:error()
  if e ~= nil then return "error", e end
  return "ok", t:result()
end

local iteration_counter = async.iteration_counter

local function errmsg(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end

describe("Queue", function()
  it("is FIFO and reports its size", async(function()
    local q = lasync.Queue()
    assert.is_true(q:empty())
    assert.is_false(q:full())
    for i = 1, 5 do q:put(i) end
    assert.equals(5, q:qsize())
    assert.is_false(q:empty())
    for i = 1, 5 do assert.equals(i, q:get()) end
    assert.is_true(q:empty())
  end))

  it("get on a non-empty queue returns without yielding", async(function()
    local q = lasync.Queue()
    q:put("x")
    local ran = false
    local t = go(function() ran = true end)
    assert.equals("x", q:get())
    assert.is_false(ran)
    ticks(1)
    assert.is_true(ran)
    assert.equals("ok", (outcome(t)))
  end))

  it("get waits for put and keeps values other than nil", async(function()
    local q = lasync.Queue()
    local t = go(function() return q:get() end)
    ticks(2)
    assert.is_false(t:done())
    q:put(false)
    assert.equals(false, t:await())
  end))

  it("getters are served in FIFO order", async(function()
    local q = lasync.Queue()
    local got = {}
    local ts = {}
    for i = 1, 5 do ts[i] = go(function() local v = q:get(); got[#got + 1] = {i, v} end) end
    ticks(2)
    for v = 1, 5 do q:put(v * 10) end
    lasync.gather(table.unpack(ts))
    for i = 1, 5 do assert.same({i, i * 10}, got[i]) end
  end))

  it("a newcomer cannot take an item handed to a waiting getter", async(function()
    local q = lasync.Queue()
    local waiter = go(function() return q:get() end)
    ticks(2)
    q:put("first")
    -- The item was handed over: the queue looks empty to others.
    assert.is_true(q:empty())
    assert.is_nil((q:get_nowait()))
    q:put("second")
    assert.equals("second", q:get())
    assert.equals("first", waiter:await())
  end))

  it("bounded: put waits while full, putters served in FIFO order", async(function()
    local q = lasync.Queue(2)
    assert.equals(2, q:maxsize())
    q:put(1); q:put(2)
    assert.is_true(q:full())
    local p3 = go(function() q:put(3) end)
    local p4 = go(function() q:put(4) end)
    ticks(2)
    assert.is_false(p3:done())
    assert.is_nil((q:put_nowait(99)))
    assert.equals(1, q:get())
    -- The slot freed by get() is granted to p3; a newcomer still sees a full queue.
    assert.is_true(q:full())
    local ok, msg = q:put_nowait(100)
    assert.is_nil(ok)
    assert.matches("Queue.put_nowait: queue is full", msg, 1, true)
    p3:await()
    assert.equals(2, q:get())
    p4:await()
    assert.equals(3, q:get())
    assert.equals(4, q:get())
    assert.is_true(q:empty())
  end))

  it("keeps waking waiting putters when woken ones hand their items to waiting getters", async(function()
    local q = lasync.Queue(1)
    q:put("a")
    local p1 = go(function() q:put("b") end)
    local p2 = go(function() q:put("c") end)
    ticks(1)                     -- both putters wait: the queue is full
    assert.equals("a", q:get())  -- grants p1 the slot
    assert.equals("b", q:get())  -- waits; p1 hands "b" over directly, leaving the slot free
    assert.equals("c", lasync.wait_for(function() return q:get() end, 1))
    p1:await()
    p2:await()
  end))

  it("a bounded queue serves several producers and one consumer to the end", async(function()
    local q = lasync.Queue(1)
    local producers = {}
    for p = 1, 3 do
      producers[p] = go(function() for i = 1, 5 do q:put(p * 10 + i) end end)
    end
    local got = {}
    for _ = 1, 15 do got[#got + 1] = lasync.wait_for(function() return q:get() end, 1) end
    for p = 1, 3 do producers[p]:await() end
    local last = {}
    for _, v in ipairs(got) do  -- each producer's items arrive in its own order
      local p = v // 10
      assert.is_true(v > (last[p] or 0))
      last[p] = v
    end
    table.sort(got)
    assert.same({ 11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35 }, got)
  end))

  it("put_nowait / get_nowait", async(function()
    local q = lasync.Queue(1)
    assert.is_true(q:put_nowait("a"))
    assert.is_nil((q:put_nowait("b")))
    assert.equals("a", q:get_nowait())
    local v, msg = q:get_nowait()
    assert.is_nil(v)
    assert.matches("Queue.get_nowait: queue is empty", msg, 1, true)
  end))

  it("join waits for task_done of every item", async(function()
    local q = lasync.Queue()
    q:join()                      -- nothing unfinished: returns at once
    for i = 1, 3 do q:put(i) end
    local joined = false
    local j = go(function() q:join(); joined = true end)
    for _ = 1, 3 do
      q:get()
      ticks(2)
      assert.is_false(joined)
      q:task_done()
    end
    j:await()
    assert.is_true(joined)
  end))

  it("misuse is a clear error", async(function()
    assert.matches("lasync%.Queue: maxsize must be a non%-negative integer", errmsg(lasync.Queue, -1))
    assert.matches("lasync%.Queue: maxsize must be a non%-negative integer", errmsg(lasync.Queue, 1.5))
    assert.matches("lasync%.Queue: maxsize must be a non%-negative integer", errmsg(lasync.Queue, "x"))
    local q = lasync.Queue()
    assert.matches("Queue.put: nil cannot be put into a queue", errmsg(q.put, q, nil))
    assert.matches("Queue.put_nowait: nil cannot be put into a queue", errmsg(q.put_nowait, q))
    q:put(1)
    q:get()
    q:task_done()
    assert.matches("Queue.task_done: called more times than there were items",
      errmsg(q.task_done, q))
  end))

  it("a getter cancelled while waiting takes nothing", async(function()
    local q = lasync.Queue()
    local g1 = go(function() return q:get() end)
    local g2 = go(function() return q:get() end)
    ticks(2)
    g1:cancel()
    ticks(2)
    assert.equals("cancelled", outcome(g1))
    q:put("item")
    assert.equals("item", g2:await())
    assert.is_true(q:empty())
  end))

  it("an item handed to a getter cancelled in the same iteration is not lost", async(function()
    local q = lasync.Queue()
    local g1 = go(function() return q:get() end)
    local g2 = go(function() return q:get() end)
    ticks(2)
    q:put("a")                   -- handed to g1 ...
    g1:cancel()                  -- ... which is cancelled before it runs again
    q:put("b")
    ticks(3)
    -- Exactly one outcome for g1: cancelled (then "a" went on to g2) or it returned "a".
    local o1, v1 = outcome(g1)
    local o2, v2 = outcome(g2)
    assert.equals("ok", o2)
    local seen = {v2}
    if o1 == "ok" then seen[#seen + 1] = v1 else assert.equals("cancelled", o1) end
    while not q:empty() do seen[#seen + 1] = q:get_nowait() end
    table.sort(seen)
    assert.same({"a", "b"}, seen)
  end))

  it("an item handed back goes to the front of the queue", async(function()
    local q = lasync.Queue()
    local g1 = go(function() return q:get() end)
    ticks(2)
    q:put("a")
    g1:cancel()
    q:put("b")
    ticks(3)
    if g1:cancelled() then
      assert.equals("a", q:get_nowait())
      assert.equals("b", q:get_nowait())
    else
      assert.equals("a", g1:result())
      assert.equals("b", q:get_nowait())
    end
  end))

  it("a putter cancelled while waiting puts nothing", async(function()
    local q = lasync.Queue(1)
    q:put("x")
    local p = go(function() q:put("never") end)
    local p2 = go(function() q:put("y") end)
    ticks(2)
    p:cancel()
    ticks(2)
    assert.equals("cancelled", outcome(p))
    assert.equals("x", q:get())
    p2:await()
    assert.equals("y", q:get())
    assert.is_true(q:empty())
  end))

  it("a slot granted to a putter cancelled in the same iteration goes to the next", async(function()
    local q = lasync.Queue(1)
    q:put("x")
    local p1 = go(function() q:put("p1") end)
    local p2 = go(function() q:put("p2") end)
    ticks(2)
    assert.equals("x", q:get())  -- grants the slot to p1 ...
    p1:cancel()                  -- ... cancelled before it runs again
    ticks(3)
    local items = {}
    while not q:empty() do items[#items + 1] = q:get_nowait(); ticks(3) end
    if p1:cancelled() then
      assert.same({"p2"}, items)
    else
      assert.same({"p1", "p2"}, items)
    end
    assert.equals("ok", (outcome(p2)))
    assert.equals(0, q:qsize())
  end))

  it("a joiner can be cancelled", async(function()
    local q = lasync.Queue()
    q:put(1)
    local j = go(function() q:join() end)
    ticks(2)
    j:cancel()
    ticks(2)
    assert.equals("cancelled", outcome(j))
    q:get(); q:task_done()
    q:join()
  end))
end)

describe("Event", function()
  it("set wakes every waiter; wait on a set event returns at once", async(function()
    local ev = lasync.Event()
    assert.is_false(ev:is_set())
    local n = 0
    local ts = {}
    for i = 1, 3 do ts[i] = go(function() ev:wait(); n = n + 1 end) end
    ticks(2)
    assert.equals(0, n)
    ev:set()
    assert.is_true(ev:is_set())
    lasync.gather(table.unpack(ts))
    assert.equals(3, n)
    assert.is_true(ev:wait())
    ev:clear()
    assert.is_false(ev:is_set())
  end))

  it("a cancelled waiter does not disturb the others", async(function()
    local ev = lasync.Event()
    local a = go(function() return ev:wait() end)
    local b = go(function() return ev:wait() end)
    ticks(2)
    a:cancel()
    ev:set()
    ticks(3)
    local o = outcome(a)
    assert.is_true(o == "cancelled" or o == "ok")
    assert.is_true(b:await())
  end))

  it("wakes 10,000 waiters in one iteration", async({timeout = 30}, function()
    local ev = lasync.Event()
    local N = 10000
    local woke_at = {}
    local ts = {}
    for i = 1, N do ts[i] = go(function() ev:wait(); woke_at[#woke_at + 1] = i end) end
    ticks(2)
    local c = iteration_counter()
    local first_iter
    local ok_same = true
    for i = 1, N do
      ts[i]:add_done_callback(function()
        first_iter = first_iter or c.n
        if c.n ~= first_iter then ok_same = false end
      end)
    end
    ev:set()
    lasync.gather(table.unpack(ts))
    c.stop()
    assert.equals(N, #woke_at)
    for i = 1, N do assert.equals(i, woke_at[i]) end  -- FIFO
    assert.is_true(ok_same, "all waiters should finish in the same iteration")
  end))
end)

describe("Lock", function()
  it("a guard releases only its own acquisition, not the next holder's", async(function()
    local lock = lasync.Lock()
    local inside = {}
    local a = go(function()
      local g <close> = lock:acquire()
      lock:release()         -- released by hand: the guard must not release again
      ticks(4)
    end)
    local b = go(function()
      ticks(1)
      local g <close> = lock:acquire()
      inside.b = true
      ticks(6)
      inside.b = false
    end)
    local c = go(function()
      ticks(2)
      local g <close> = lock:acquire()
      assert(not inside.b, "C acquired the lock while B held it")
    end)
    a:await(); b:await(); c:await()
    assert.is_false(lock:locked())
  end))

  it("a guard taken before Condition.wait still releases the lock after it", async(function()
    local cond = lasync.Condition()
    local w = go(function()
      local g <close> = cond:acquire()
      cond:wait()
    end)
    ticks(1)
    do
      local g <close> = cond:acquire()
      cond:notify()
    end
    w:await()
    assert.is_false(cond:locked())
  end))

  it("acquire returns a guard usable as a <close> variable", async(function()
    local lock = lasync.Lock()
    do
      local g <close> = lock:acquire()
      assert.is_true(lock:locked())
    end
    assert.is_false(lock:locked())
    -- The guard also releases on error, and only once.
    local ok = pcall(function()
      local g <close> = lock:acquire()
      error("boom")
    end)
    assert.is_false(ok)
    assert.is_false(lock:locked())
    local g = lock:acquire()
    g:release()
    g:release()
    assert.is_false(lock:locked())
  end))

  it("is mutually exclusive and FIFO-fair", async(function()
    local lock = lasync.Lock()
    local order, inside = {}, 0
    local ts = {}
    for i = 1, 5 do
      ts[i] = go(function()
        local g <close> = lock:acquire()
        inside = inside + 1
        assert.equals(1, inside)
        order[#order + 1] = i
        ticks(2)
        inside = inside - 1
      end)
    end
    lasync.gather(table.unpack(ts))
    assert.same({1, 2, 3, 4, 5}, order)
    assert.is_false(lock:locked())
  end))

  it("a released lock is handed to the oldest waiter, not to a newcomer", async(function()
    local lock = lasync.Lock()
    local g = lock:acquire()
    local w = go(function() local g2 <close> = lock:acquire(); return "waiter" end)
    ticks(2)
    g:release()
    assert.is_true(lock:locked())      -- handed to w, not free
    local newcomer = go(function() local g3 <close> = lock:acquire(); return "newcomer" end)
    assert.equals("waiter", w:await())
    assert.equals("newcomer", newcomer:await())
    assert.is_false(lock:locked())
  end))

  it("releasing an unlocked lock is a clear error", async(function()
    local lock = lasync.Lock()
    assert.matches("Lock.release: lock is not acquired", errmsg(lock.release, lock))
  end))

  it("a waiter cancelled while waiting takes nothing", async(function()
    local lock = lasync.Lock()
    local g = lock:acquire()
    local w1 = go(function() local x <close> = lock:acquire() end)
    local w2 = go(function() local x <close> = lock:acquire(); return "w2" end)
    ticks(2)
    w1:cancel()
    ticks(2)
    assert.equals("cancelled", outcome(w1))
    g:release()
    assert.equals("w2", w2:await())
    assert.is_false(lock:locked())
  end))

  it("a lock handed to a waiter cancelled in the same iteration is passed on", async(function()
    local lock = lasync.Lock()
    local g = lock:acquire()
    local w1 = go(function() local x <close> = lock:acquire(); ticks(1) end)
    local w2 = go(function() local x <close> = lock:acquire(); return "w2" end)
    ticks(2)
    g:release()       -- handed to w1 ...
    w1:cancel()       -- ... cancelled before it runs again
    assert.equals("w2", w2:await())
    ticks(3)
    assert.equals("cancelled", outcome(w1))
    assert.is_false(lock:locked())
  end))
end)

describe("Semaphore", function()
  it("admits n holders at a time, FIFO", async(function()
    local sem = lasync.Semaphore(2)
    local inside, peak, order = 0, 0, {}
    local ts = {}
    for i = 1, 6 do
      ts[i] = go(function()
        local g <close> = sem:acquire()
        inside = inside + 1
        peak = math.max(peak, inside)
        order[#order + 1] = i
        ticks(2)
        inside = inside - 1
      end)
    end
    lasync.gather(table.unpack(ts))
    assert.equals(2, peak)
    assert.same({1, 2, 3, 4, 5, 6}, order)
    assert.equals(2, sem:value())
    assert.is_false(sem:locked())
  end))

  it("defaults to 1 and can be created with 0", async(function()
    assert.equals(1, lasync.Semaphore():value())
    local s = lasync.Semaphore(0)
    assert.is_true(s:locked())
    local t = go(function() local g <close> = s:acquire(); return "in" end)
    ticks(2)
    assert.is_false(t:done())
    s:release()
    assert.equals("in", t:await())
    assert.equals(1, s:value())
  end))

  it("negative sizes are a clear error", async(function()
    assert.matches("lasync%.Semaphore: initial value must be a non%-negative integer",
      errmsg(lasync.Semaphore, -1))
  end))

  it("no permit leaks when a waiter is cancelled, before or after the hand-over",
    async(function()
      local sem = lasync.Semaphore(1)
      local g = sem:acquire()
      local w1 = go(function() local x <close> = sem:acquire() end)
      local w2 = go(function() local x <close> = sem:acquire() end)
      local w3 = go(function() local x <close> = sem:acquire(); return "w3" end)
      ticks(2)
      w1:cancel()                  -- while waiting
      ticks(2)
      g:release()                  -- handed to w2 ...
      w2:cancel()                  -- ... cancelled in the same iteration
      assert.equals("w3", w3:await())
      ticks(3)
      assert.equals("cancelled", outcome(w1))
      assert.is_true(w2:done())
      assert.equals(1, sem:value())
    end))
end)

describe("Condition", function()
  it("misuse of wait_for and of sizes is a clear error", async(function()
    local cond = lasync.Condition()
    local g <close> = cond:acquire()
    assert.matches("Condition.wait_for: expected a predicate function", errmsg(cond.wait_for, cond, 5))
    assert.matches("lasync%.Queue: maxsize must be a non%-negative integer, got string",
      errmsg(lasync.Queue, "2"))   -- a string "2" is not shown as if it were the number 2
    assert.matches("lasync%.Semaphore: initial value must be", errmsg(lasync.Semaphore, "1"))
  end))

  it("wait releases the lock and retakes it after notify", async(function()
    local cond = lasync.Condition()
    local items = {}
    local consumer = go(function()
      local g <close> = cond:acquire()
      cond:wait_for(function() return #items > 0 end)
      assert.is_true(cond:locked())
      return table.remove(items, 1)
    end)
    ticks(2)
    assert.is_false(cond:locked())    -- released while waiting
    do
      local g <close> = cond:acquire()
      items[1] = "x"
      cond:notify()
    end
    assert.equals("x", consumer:await())
    assert.is_false(cond:locked())
  end))

  it("notify(n) wakes n waiters in FIFO order; notify_all wakes the rest", async(function()
    local cond = lasync.Condition(lasync.Lock())
    local order = {}
    local ts = {}
    for i = 1, 5 do
      ts[i] = go(function()
        local g <close> = cond:acquire()
        cond:wait()
        order[#order + 1] = i
      end)
    end
    ticks(2)
    do
      local g <close> = cond:acquire()
      cond:notify(2)
    end
    ticks(4)
    assert.same({1, 2}, order)
    do
      local g <close> = cond:acquire()
      cond:notify_all()
    end
    lasync.gather(table.unpack(ts))
    assert.same({1, 2, 3, 4, 5}, order)
  end))

  it("misuse is a clear error", async(function()
    local cond = lasync.Condition()
    assert.matches("Condition.wait: lock is not acquired", errmsg(cond.wait, cond))
    assert.matches("Condition.notify: lock is not acquired", errmsg(cond.notify, cond))
    assert.matches("Condition.notify_all: lock is not acquired", errmsg(cond.notify_all, cond))
    assert.matches("Condition.release: lock is not acquired", errmsg(cond.release, cond))
    assert.matches("lasync%.Condition: expected a lasync.Lock", errmsg(lasync.Condition, {}))
    local g <close> = cond:acquire()
    assert.matches("Condition.notify: n must be a non%-negative integer",
      errmsg(cond.notify, cond, -2))
  end))

  it("a waiter cancelled while waiting retakes the lock before raising", async(function()
    local cond = lasync.Condition()
    local held_when_raised
    local w = go(function()
      local g <close> = cond:acquire()
      local ok, e = pcall(cond.wait, cond)
      held_when_raised = cond:locked()
      error(e, 0)
    end)
    ticks(2)
    local g = cond:acquire()         -- hold the lock so the waiter must queue for it
    w:cancel()
    ticks(3)
    assert.is_false(w:done())        -- still waiting for the lock
    g:release()
    ticks(3)
    assert.equals("cancelled", outcome(w))
    assert.is_true(held_when_raised)
    assert.is_false(cond:locked())
  end))

  it("a notification reaching a waiter cancelled in the same iteration is passed on",
    async(function()
      local cond = lasync.Condition()
      local w1 = go(function() local g <close> = cond:acquire(); cond:wait(); return 1 end)
      local w2 = go(function() local g <close> = cond:acquire(); cond:wait(); return 2 end)
      ticks(2)
      do
        local g <close> = cond:acquire()
        cond:notify(1)               -- notifies w1 ...
        w1:cancel()                  -- ... cancelled in the same iteration
      end
      ticks(6)
      local o1 = outcome(w1)
      if o1 == "cancelled" then
        assert.equals(2, w2:await())   -- the notification went on to w2
      else
        assert.equals(1, w1:result())
        local g <close> = cond:acquire()
        cond:notify()
        g:release()
        assert.equals(2, w2:await())
      end
      assert.is_false(cond:locked())
    end))

  it("wakes 10,000 waiters in one iteration", async({timeout = 30}, function()
    local cond = lasync.Condition()
    local N = 10000
    local c
    local order, iters = {}, {}
    local ts = {}
    for i = 1, N do
      ts[i] = go(function()
        local g <close> = cond:acquire()
        cond:wait()
        order[#order + 1] = i
        iters[c.n] = true
      end)
    end
    ticks(2)
    c = iteration_counter()
    do
      local g <close> = cond:acquire()
      cond:notify_all()
    end
    lasync.gather(table.unpack(ts))
    c.stop()
    assert.equals(N, #order)
    for i = 1, N do assert.equals(i, order[i]) end
    local distinct = 0
    for _ in pairs(iters) do distinct = distinct + 1 end
    assert.equals(1, distinct)
    assert.is_false(cond:locked())
  end))
end)
