-- Combinators and structured concurrency: gather, wait, wait_for, timeout, shield,
-- as_completed, task_group (lua/lasync/combinators.lua).
local lasync = require "lasync"
local async = require "lasync.busted"

local function ticks(n)
  for _ = 1, n or 1 do lasync.sleep(0) end
end

local function catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

-- A task function that sleeps d seconds and returns v, recording whether it got cancelled.
local function sleeper(d, v, log)
  return function()
    local ok, e = pcall(lasync.sleep, d)
    if not ok then
      if log then log[#log + 1] = v end
      error(e, 0)
    end
    return v
  end
end

describe("gather", function()
  it("raises the first failure with the other children's errors attached, dropping none", async(function()
    local ok, e = pcall(lasync.gather,
      function() lasync.sleep(0.01); error("A", 0) end,
      function() pcall(lasync.sleep, 1); error("cleanup failed", 0) end,
      function() lasync.sleep(1) end)  -- merely cancelled: nothing to attach
    assert.is_false(ok)
    assert.equal("A\n(also in gather) cleanup failed", e)
    local first = {message = "first"}
    ok, e = pcall(lasync.gather,
      function() lasync.sleep(0.01); error(first) end,
      function() pcall(lasync.sleep, 1); error({message = "second"}) end)
    assert.is_false(ok)
    assert.equal(first, e)  -- the same error object, carrying the others
    assert.equal("second", e.others[1].message)
  end))

  it("an error passed on by a child that awaited the failed one counts once", async(function()
    local err = {message = "once"}
    local t1 = lasync.spawn(function() lasync.sleep(0.01); error(err) end)
    local t2 = lasync.spawn(function() return t1:await() end)
    local e = catch(lasync.gather, t1, t2)
    assert.equal(err, e)
    assert.is_nil(e.others)   -- not a list holding the error itself
  end))

  it("returns the first result of each, in argument order", async(function()
    local fut = lasync.future()
    fut:set_result("f1", "ignored")
    local task = lasync.spawn(sleeper(0.02, "task"))
    local a, b, c, d = lasync.gather(sleeper(0.03, "slow"), sleeper(0.01, "fast"), fut, task)
    assert.same({"slow", "fast", "f1", "task"}, {a, b, c, d})
    assert.equals(0, select("#", lasync.gather()))
  end))

  it("runs its children concurrently", async(function()
    local loop = lasync.get_loop()
    local t0 = loop:time()
    lasync.gather(sleeper(0.05), sleeper(0.05), sleeper(0.05))
    assert.is_true(loop:time() - t0 < 0.12)
  end))

  it("keeps nils in place", async(function()
    local a, b, c = lasync.gather(function() return nil end, function() return 2 end,
      function() end)
    assert.is_nil(a); assert.equals(2, b); assert.is_nil(c)
  end))

  it("accepts values with an __await metamethod", async(function()
    local aw = setmetatable({}, {__await = function() lasync.sleep(0.01); return "awaited" end})
    assert.equals("awaited", (lasync.gather(aw)))
  end))

  it("on the first error cancels the others, waits for them, and raises it", async(function()
    local cancelled = {}
    local boom = setmetatable({message = "boom"}, {__tostring = function() return "boom" end})
    local t1 = lasync.spawn(sleeper(1, "t1", cancelled))
    local e = catch(lasync.gather, t1, function() lasync.sleep(0.01); error(boom) end,
      sleeper(1, "f3", cancelled))
    assert.equals(boom, e)
    assert.is_true(t1:cancelled())
    table.sort(cancelled)
    assert.same({"f3", "t1"}, cancelled)  -- both saw their cancellation before gather raised
  end))

  it("raises CancelledError when a child is cancelled from elsewhere", async(function()
    local t = lasync.spawn(sleeper(1))
    local other = lasync.spawn(sleeper(1))
    lasync.get_loop():call_later(0.01, function() t:cancel() end)
    local e = catch(lasync.gather, t, other)
    assert.is_true(lasync.is_cancelled(e))
    assert.is_true(other:cancelled())
  end))

  it("cancelling the waiting task cancels the children", async(function()
    local cancelled = {}
    local c1 = lasync.spawn(sleeper(1, "c1", cancelled))
    local g = lasync.spawn(function() return lasync.gather(c1, sleeper(1, "c2", cancelled)) end)
    ticks(3)
    g:cancel()
    local e = catch(g.await, g)
    assert.is_true(lasync.is_cancelled(e))
    assert.is_true(c1:cancelled())
    table.sort(cancelled)
    assert.same({"c1", "c2"}, cancelled)
  end))

  it("rejects what it cannot await", async(function()
    assert.matches("lasync%.gather: argument #2 is not awaitable", tostring(catch(lasync.gather,
      function() end, 42)))
  end))
end)

describe("wait", function()
  it("waits for all by default and keeps argument order", async(function()
    local done, pending = lasync.wait({sleeper(0.02, "a"), sleeper(0.01, "b")})
    assert.equals(2, #done)
    assert.equals(0, #pending)
    assert.equals("a", done[1]:result())
    assert.equals("b", done[2]:result())
  end))

  it("return_when = first returns after the first completion and cancels nothing",
    async(function()
      local slow = lasync.spawn(sleeper(0.2, "slow"))
      local done, pending = lasync.wait({slow, sleeper(0.01, "fast")}, {return_when = "first"})
      assert.equals(1, #done)
      assert.equals("fast", done[1]:result())
      assert.same({slow}, pending)
      assert.is_false(slow:done())
      assert.equals("slow", slow:await())
    end))

  it("return_when = error returns at the first error", async(function()
    local slow = lasync.spawn(sleeper(0.2, "slow"))
    local bad = lasync.spawn(function() lasync.sleep(0.01); error("bad", 0) end)
    local done, pending = lasync.wait({slow, sleeper(0.005, "ok"), bad}, {return_when = "error"})
    assert.equals(2, #done)
    assert.equals("bad", done[2]:error())
    assert.same({slow}, pending)
    slow:await()
  end))

  it("return_when = error waits for all when nothing fails", async(function()
    local done, pending = lasync.wait({sleeper(0.01), sleeper(0.02)}, {return_when = "error"})
    assert.equals(2, #done)
    assert.equals(0, #pending)
  end))

  it("a timeout returns what is done and cancels nothing", async(function()
    local slow = lasync.spawn(sleeper(0.2, "slow"))
    local done, pending = lasync.wait({slow, sleeper(0.01)}, {timeout = 0.05})
    assert.equals(1, #done)
    assert.same({slow}, pending)
    assert.is_false(slow:done())
    slow:await()
  end))

  it("cancelling the waiting task does not cancel the children", async(function()
    local child = lasync.spawn(sleeper(0.05, "child"))
    local w = lasync.spawn(function() return lasync.wait({child}) end)
    ticks(2)
    w:cancel()
    assert.is_true(lasync.is_cancelled(catch(w.await, w)))
    assert.is_false(child:done())
    assert.equals("child", child:await())
  end))

  it("misuse is a clear error", async(function()
    assert.matches("lasync%.wait: return_when must be", tostring(catch(lasync.wait, {}, {return_when = "x"})))
    assert.matches("lasync%.wait: expected a list", tostring(catch(lasync.wait, 3)))
    assert.matches("lasync%.wait: opts must be a table", tostring(catch(lasync.wait, {}, 5)))
    -- as asyncio.wait: an empty list is a mistake, not something to wait on
    assert.matches("lasync%.wait: the list is empty", tostring(catch(lasync.wait, {})))
    local ran = false
    assert.matches("lasync%.wait_for: timeout is NaN",
      tostring(catch(lasync.wait_for, function() ran = true end, 0 / 0)))
    ticks(1)
    assert.is_false(ran)  -- refused before anything was started
  end))
end)

describe("wait_for", function()
  it("returns the results when in time", async(function()
    local a, b = lasync.wait_for(function() lasync.sleep(0.01); return 1, 2 end, 1)
    assert.same({1, 2}, {a, b})
    assert.equals(3, lasync.wait_for(function() return 3 end))   -- no timeout
  end))

  it("cancels the awaitable at the deadline, waits for it, then raises TimeoutError",
    async(function()
      local cleaned = false
      local child = lasync.spawn(function()
        local ok, e = pcall(lasync.sleep, 1)
        lasync.sleep(0.01)           -- cleanup that itself waits
        cleaned = true
        error(e, 0)
      end)
      local e = catch(lasync.wait_for, child, 0.02)
      assert.is_true(lasync.is_timeout(e))
      assert.equals(lasync.TimeoutError, getmetatable(e))
      assert.is_true(cleaned)
      assert.is_true(child:cancelled())
    end))

  it("a deadline already passed (0 or less) cancels at once: a function never runs",
    async(function()
      local ran = false
      for _, d in ipairs({0, -1}) do
        local e = catch(lasync.wait_for, function() ran = true; return "v" end, d)
        assert.is_true(lasync.is_timeout(e))
      end
      assert.is_false(ran)
      local f = lasync.future()
      assert.is_true(lasync.is_timeout(catch(lasync.wait_for, f, 0)))
      assert.is_true(f:cancelled())
      local done = lasync.future()
      done:set_result("ready")
      assert.equals("ready", lasync.wait_for(done, 0))   -- what is done already is no timeout
      assert.equals(0, lasync.current_task():cancelling())
    end))

  it("an outside cancellation comes through as CancelledError and cancels the child",
    async(function()
      local child = lasync.spawn(sleeper(1))
      local w = lasync.spawn(function() return lasync.wait_for(child, 0.5) end)
      ticks(2)
      w:cancel()
      local e = catch(w.await, w)
      assert.is_true(lasync.is_cancelled(e))
      assert.is_true(child:cancelled())
    end))

  it("an outside cancellation in the deadline's iteration is a CancelledError", async(function()
    local loop = lasync.get_loop()
    local child = lasync.spawn(sleeper(1))
    local w = lasync.spawn(function() return lasync.wait_for(child, 0.03) end)
    ticks(2)
    -- A timer due at the same moment as wait_for's deadline (scheduled after it).
    loop:call_later(0.03, function() w:cancel() end)
    local e = catch(w.await, w)
    assert.is_true(lasync.is_cancelled(e))
    assert.is_true(child:done())
  end))

  it("a result and the deadline in the same iteration give exactly one outcome",
    async(function()
      for _ = 1, 5 do
        local fut = lasync.future()
        lasync.get_loop():call_later(0.01, function() fut:set_result("r") end)
        local ok, v = pcall(lasync.wait_for, fut, 0.01)
        if ok then assert.equals("r", v) else assert.is_true(lasync.is_timeout(v)) end
      end
    end))

  it("a child that finishes anyway after the deadline delivers its result", async(function()
    local e = lasync.wait_for(function()
      local ok = pcall(lasync.sleep, 1)
      lasync.get_loop():time()
      lasync.current_task():uncancel()
      return ok and "slept" or "stopped"
    end, 0.01)
    assert.equals("stopped", e)
  end))

  it("nested wait_for expiring together raises at the outer one only", async(function()
    local inner_saw
    local e = catch(lasync.wait_for, function()
      local ok, err = pcall(lasync.wait_for, sleeper(1), 0.03)
      inner_saw = err
      error(err, 0)
    end, 0.03)
    assert.is_true(lasync.is_timeout(e))
    assert.is_true(lasync.is_cancelled(inner_saw))
  end))
end)

describe("timeout", function()
  it("returns fn's results", async(function()
    local a, b = lasync.timeout(1, function(x) lasync.sleep(0.01); return x, "b" end, "a")
    assert.same({"a", "b"}, {a, b})
    assert.equals("n", lasync.timeout(nil, function() return "n" end))
  end))

  it("a deadline already passed (0 or less) times out at fn's first suspension", async(function()
    for _, d in ipairs({0, -1}) do
      local e = catch(lasync.timeout, d, function() lasync.sleep(0); return "late" end)
      assert.is_true(lasync.is_timeout(e))
      assert.equals(0, lasync.current_task():cancelling())
      -- fn that never suspends finishes: there was nothing to interrupt
      assert.equals("now", lasync.timeout(d, function() return "now" end))
    end
    ticks(2)                                           -- no stray cancellation left behind
  end))

  it("raises TimeoutError at the deadline and the task goes on normally", async(function()
    local task = lasync.current_task()
    local cleanup_ran = false
    local e = catch(lasync.timeout, 0.02, function()
      local guard <close> = setmetatable({}, {__close = function() cleanup_ran = true end})
      lasync.sleep(1)
    end)
    assert.is_true(lasync.is_timeout(e))
    assert.is_true(cleanup_ran)
    assert.equals(0, task:cancelling())
    lasync.sleep(0.01)       -- not cancelled any more
    ticks(2)
  end))

  it("lets an outside cancellation through as CancelledError", async(function()
    local t = lasync.spawn(function() return lasync.timeout(0.5, lasync.sleep, 1) end)
    ticks(2)
    t:cancel()
    assert.is_true(lasync.is_cancelled(catch(t.await, t)))
  end))

  it("an outside cancellation at the same time as the deadline stays a cancellation",
    async(function()
      local t = lasync.spawn(function() return lasync.timeout(0.03, lasync.sleep, 1) end)
      ticks(1)
      lasync.get_loop():call_later(0.03, function() t:cancel() end)
      assert.is_true(lasync.is_cancelled(catch(t.await, t)))
    end))

  it("nested timeouts that expire together raise at the outer one only", async(function()
    local inner_saw
    local e = catch(lasync.timeout, 0.03, function()
      local ok, err = pcall(lasync.timeout, 0.03, lasync.sleep, 1)
      inner_saw = err
      error(err, 0)
    end)
    assert.is_true(lasync.is_timeout(e))
    assert.is_true(lasync.is_cancelled(inner_saw))
    assert.equals(0, lasync.current_task():cancelling())
  end))

  it("a shorter inner timeout raises at the inner one", async(function()
    local r = lasync.timeout(1, function()
      local e = catch(lasync.timeout, 0.01, lasync.sleep, 1)
      assert.is_true(lasync.is_timeout(e))
      lasync.sleep(0.01)
      return "outer goes on"
    end)
    assert.equals("outer goes on", r)
  end))

  -- Needs core behaviour: task:uncancel() bringing the count to 0 must also withdraw a
  -- cancellation that is still waiting for the next suspension (asyncio 3.13 clears
  -- _must_cancel there). Without it the deadline's cancel, which arrived in the same iteration
  -- as fn's last result, hits the task later although timeout() returned normally.
  it("a result in the deadline's iteration leaves no stray cancellation behind",
    async(function()
      for _ = 1, 3 do
        local fut = lasync.future()
        lasync.get_loop():call_later(0.01, function() fut:set_result("r") end)
        local ok, v = pcall(lasync.timeout, 0.01, fut.await, fut)
        if ok then assert.equals("r", v) else assert.is_true(lasync.is_timeout(v)) end
        assert.equals(0, lasync.current_task():cancelling())
        lasync.sleep(0.001)  -- must not raise CancelledError
      end
    end))

  it("must be called from a task, with a function", async(function()
    assert.matches("lasync%.timeout: expected a function", tostring(catch(lasync.timeout, 1, 2)))
    local e
    lasync.get_loop():call_soon(function() e = select(2, pcall(lasync.timeout, 1, print)) end)
    ticks(2)
    assert.matches("lasync%.timeout: must be called from a task", tostring(e))
  end))
end)

describe("shield", function()
  it("returns the results", async(function()
    assert.equals("v", lasync.shield(sleeper(0.01, "v")))
  end))

  it("the shielded task survives the cancellation of its waiter", async(function()
    local inner = lasync.spawn(sleeper(0.05, "inner"))
    local w = lasync.spawn(function() return lasync.shield(inner) end)
    ticks(2)
    w:cancel()
    assert.is_true(lasync.is_cancelled(catch(w.await, w)))
    assert.is_false(inner:done())
    assert.equals("inner", inner:await())
  end))
end)

describe("as_completed", function()
  it("yields futures in completion order, done ones first", async(function()
    local ready = lasync.future()
    ready:set_result("ready")
    local order = {}
    for f in lasync.as_completed({sleeper(0.03, "slow"), sleeper(0.01, "fast"), ready}) do
      order[#order + 1] = f:result()
    end
    assert.same({"ready", "fast", "slow"}, order)
  end))

  it("raises TimeoutError when the deadline passes first, cancelling nothing", async(function()
    local slow = lasync.spawn(sleeper(0.2, "slow"))
    local got = {}
    local e = catch(function()
      for f in lasync.as_completed({slow, sleeper(0.01, "fast")}, 0.05) do
        got[#got + 1] = f:result()
      end
    end)
    assert.is_true(lasync.is_timeout(e))
    assert.same({"fast"}, got)
    assert.is_false(slow:done())
    slow:cancel()
    ticks(2)
  end))

  it("breaking out of the loop leaves no timer behind", async(function()
    local slow = lasync.spawn(sleeper(0.2))
    for _ in lasync.as_completed({slow, sleeper(0.01)}, 10) do break end
    slow:cancel()
    ticks(2)
  end))

  it("an iterator called after its loop closed it says so", async(function()
    local slow = lasync.spawn(sleeper(0.2))
    local iter
    for _, f in (function(...) iter = ...; return ... end)(lasync.as_completed({slow, sleeper(0.01)}, 10)) do
      break
    end
    assert.matches("lasync%.as_completed: the iterator was closed", tostring(catch(iter)))
    slow:cancel()
    ticks(2)
  end))
end)

describe("task_group", function()
  it("waits for every child and returns the body's results", async(function()
    local done = {}
    local r = lasync.task_group(function(tg)
      for i = 1, 3 do
        tg:spawn(function() lasync.sleep(0.01 * i); done[#done + 1] = i end)
      end
      return "body"
    end)
    assert.equals("body", r)
    assert.same({1, 2, 3}, done)
  end))

  it("children may spawn more children", async(function()
    local n = 0
    lasync.task_group(function(tg)
      tg:spawn(function()
        lasync.sleep(0.01)
        tg:spawn(function() lasync.sleep(0.01); n = n + 1 end)
        n = n + 1
      end)
    end)
    assert.equals(2, n)
  end))

  it("a failing child cancels its siblings and the body; the first error is raised",
    async(function()
      local cancelled = {}
      local body_cancelled = false
      local e = catch(lasync.task_group, function(tg)
        tg:spawn(sleeper(1, "sibling", cancelled))
        tg:spawn(function() lasync.sleep(0.01); error({message = "child failed"}) end)
        local ok, err = pcall(lasync.sleep, 1)
        body_cancelled = not ok and lasync.is_cancelled(err)
        error(err, 0)
      end)
      assert.equals("child failed", e.message)
      assert.is_nil(e.others)
      assert.is_true(body_cancelled)
      assert.same({"sibling"}, cancelled)
      assert.equals(0, lasync.current_task():cancelling())
      lasync.sleep(0.001)    -- the group's own cancel of this task is gone
    end))

  it("collects every child error: the first is raised, the others attached", async(function()
    local e = catch(lasync.task_group, function(tg)
      tg:spawn(function() lasync.sleep(0.01); error({message = "e1"}) end)
      tg:spawn(function() lasync.sleep(0.01); error({message = "e2"}) end)
      tg:spawn(function()
        -- Fails while being cancelled.
        local ok = pcall(lasync.sleep, 1)
        error({message = "e3"})
      end)
    end)
    assert.equals("e1", e.message)
    local others = {}
    for i, o in ipairs(e.others) do others[i] = o.message end
    table.sort(others)
    assert.same({"e2", "e3"}, others)
  end))

  it("string errors get the others appended", async(function()
    local e = catch(lasync.task_group, function(tg)
      tg:spawn(function() lasync.sleep(0.01); error("s1", 0) end)
      tg:spawn(function() lasync.sleep(0.01); error("s2", 0) end)
    end)
    assert.is_string(e)
    assert.matches("^s1", e)
    assert.matches("s2", e)
  end))

  it("a child's error that the body awaited and let through is raised once", async(function()
    local e = catch(lasync.task_group, function(tg)
      tg:spawn(function() lasync.sleep(0.01); error("child failed", 0) end):await()
    end)
    assert.equal("child failed", e)
    local err = {message = "child table"}
    e = catch(lasync.task_group, function(tg)
      tg:spawn(function() lasync.sleep(0.01); error(err) end):await()
    end)
    assert.equal(err, e)
    assert.is_nil(e.others)
  end))

  it("the body's own error cancels the children and is collected", async(function()
    local cancelled = {}
    local e = catch(lasync.task_group, function(tg)
      tg:spawn(sleeper(1, "child", cancelled))
      tg:spawn(function()
        pcall(lasync.sleep, 1)
        error({message = "child cleanup failed"})
      end)
      lasync.sleep(0.01)
      error({message = "body failed"})
    end)
    assert.equals("body failed", e.message)
    assert.equals("child cleanup failed", e.others[1].message)
    assert.same({"child"}, cancelled)
  end))

  it("cancelling the waiting task cancels the children", async(function()
    local cancelled = {}
    local t = lasync.spawn(function()
      lasync.task_group(function(tg)
        tg:spawn(sleeper(1, "a", cancelled))
        tg:spawn(sleeper(1, "b", cancelled))
      end)
    end)
    ticks(3)
    t:cancel()
    assert.is_true(lasync.is_cancelled(catch(t.await, t)))
    table.sort(cancelled)
    assert.same({"a", "b"}, cancelled)
  end))

  it("a child cancelled from elsewhere is not an error", async(function()
    local r = lasync.task_group(function(tg)
      local c = tg:spawn(sleeper(1))
      tg:spawn(function() lasync.sleep(0.01); c:cancel() end)
      return "fine"
    end)
    assert.equals("fine", r)
  end))

  it("spawning into a finished group is an error", async(function()
    local saved
    lasync.task_group(function(tg) saved = tg end)
    assert.matches("TaskGroup.spawn: the task group has finished",
      tostring(catch(saved.spawn, saved, function() end)))
    assert.matches("lasync%.task_group: expected a function", tostring(catch(lasync.task_group, 1)))
  end))
end)

describe("debug mode", function()
  it("reports a task that swallows its CancelledError and goes on, and not timeout()", function()
    local reports = {}
    lasync.run(function()
      local loop = lasync.get_loop()
      loop:set_debug(true)
      loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx.message end)
      local swallow = lasync.spawn(function()
        pcall(lasync.sleep, 1)
        return "went on"
      end)
      local polite = lasync.spawn(function()
        local ok = pcall(lasync.timeout, 0.01, lasync.sleep, 1)
        return "timed out"
      end)
      lasync.sleep(0)
      swallow:cancel()
      assert.equals("went on", swallow:await())
      assert.equals("timed out", polite:await())
    end)
    assert.equals(1, #reports)
    assert.matches("caught CancelledError and went on", reports[1])
  end)
end)
