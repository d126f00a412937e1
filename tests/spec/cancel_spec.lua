-- Task cancellation (SPEC 2 "Cancellation", CONTRACT "Cancellation semantics as implemented").
local lasync = require "lasync"
local async = require "lasync.busted"

local function soon(...)
  local f = lasync.future()
  lasync.get_loop():call_soon(f.set_result, f, ...)
  return f
end

-- Awaits t and returns "ok", values | "cancelled", err | "error", err.
local function outcome(t)
  local r = table.pack(pcall(t.await, t))
  if r[1] then return "ok", table.unpack(r, 2, r.n) end
  if lasync.is_cancelled(r[2]) then return "cancelled", r[2] end
  return "error", r[2]
end

describe("task:cancel()", function()
  it("raises CancelledError at the task's pending await; the task ends cancelled", async(function()
    local f = lasync.future()
    local seen
    local t = lasync.spawn(function()
      local ok, e = pcall(f.await, f)
      seen = {ok, lasync.is_cancelled(e), getmetatable(e) == lasync.CancelledError}
      error(e, 0)
    end)
    lasync.sleep(0)
    assert.is_true(t:cancel())
    assert.is_false(t:done()) -- delivered at the task's next step, not inline
    local kind = outcome(t)
    assert.equals("cancelled", kind)
    assert.same({false, true, true}, seen)
    assert.is_true(t:done())
    assert.is_true(t:cancelled())
    -- the contract: the future the task awaited is cancelled with it
    assert.is_true(f:cancelled())
  end))

  it("interrupts a sleep", async(function()
    local loop = lasync.get_loop()
    local t0 = loop:time()
    local t = lasync.spawn(function() lasync.sleep(1000) end)
    lasync.sleep(0)
    t:cancel()
    assert.equals("cancelled", (outcome(t)))
    assert.is_true(loop:time() - t0 < 10)
  end))

  it("carries the message to the task and to its awaiters", async(function()
    local inside
    local t = lasync.spawn(function()
      local ok, e = pcall(lasync.sleep, 1000)
      inside = e.message
      error(e, 0)
    end)
    lasync.sleep(0)
    t:cancel("shutting down")
    local kind, e = outcome(t)
    assert.equals("cancelled", kind)
    assert.equals("shutting down", inside)
    assert.equals("shutting down", e.message)
    assert.matches("shutting down", tostring(e))
  end))

  it("cancel() then uncancel() before the task runs still cuts its sleep short with the error",
    async(function()
      local t = lasync.spawn(function()
        local ok, e = pcall(lasync.sleep, 1, "slept")
        return ok, lasync.is_cancelled(e)
      end)
      lasync.sleep(0)
      t:cancel()
      t:uncancel()
      local ok, cancelled = t:await()
      assert.is_false(ok)  -- not an early, silent end of the sleep
      assert.is_true(cancelled)
    end))

  it("a later cancel() without a message does not repeat an earlier one's", async(function()
    local msgs = {}
    local t = lasync.spawn(function()
      local _, e = pcall(lasync.sleep, 1000)
      msgs[1] = e.message
      lasync.current_task():uncancel()
      _, e = pcall(lasync.sleep, 1000)
      msgs[2] = e.message
    end)
    lasync.sleep(0)
    t:cancel("shutdown requested by admin")
    lasync.sleep(0)
    t:cancel()
    t:await()
    assert.equals("shutdown requested by admin", msgs[1])
    assert.is_not.equals("shutdown requested by admin", msgs[2])
  end))

  it("runs pcall handlers and <close> variables, in order, and cleanup may await", async(function()
    local log = {}
    local t = lasync.spawn(function()
      local _ <close> = setmetatable({}, {__close = function(_, err)
        log[#log + 1] = "close:" .. tostring(lasync.is_cancelled(err))
      end})
      local ok, e = pcall(function()
        local _ <close> = setmetatable({}, {__close = function()
          log[#log + 1] = soon("awaited in inner __close"):await()
        end})
        lasync.sleep(1000)
      end)
      log[#log + 1] = "handler:" .. tostring(lasync.is_cancelled(e))
      log[#log + 1] = soon("awaited in handler"):await()
      error(e, 0)
    end)
    lasync.sleep(0)
    t:cancel()
    assert.equals("cancelled", (outcome(t)))
    assert.same({"awaited in inner __close", "handler:true", "awaited in handler", "close:true"}, log)
  end))

  it("a <close> variable of the task's own function may await while the cancellation unwinds",
    async(function()
    -- the Lua analogue of `finally: await conn.close()` in asyncio
    local log = {}
    local t = lasync.spawn(function()
      local _ <close> = setmetatable({}, {__close = function(_, err)
        log[#log + 1] = "close:" .. tostring(lasync.is_cancelled(err))
        local ok, v = pcall(function() return soon("awaited in __close"):await() end)
        log[#log + 1] = ok and v or ("await failed: " .. tostring(v))
      end})
      lasync.sleep(1000)
    end)
    lasync.sleep(0)
    t:cancel()
    assert.equals("cancelled", (outcome(t)))
    assert.same({"close:true", "awaited in __close"}, log)
  end))

  it("a <close> variable of the task's own function may await when the task fails", async(function()
    local log = {}
    local t = lasync.spawn(function()
      local _ <close> = setmetatable({}, {__close = function()
        local ok, v = pcall(function() return soon("awaited in __close"):await() end)
        log[#log + 1] = ok and v or ("await failed: " .. tostring(v))
      end})
      lasync.sleep(0)
      error({tag = "orig"})
    end)
    local kind, e = outcome(t)
    assert.equals("error", kind)
    assert.equals("orig", e.tag)
    assert.same({"awaited in __close"}, log)
  end))

  it("returns false, with no error, for a finished task (result, error or cancelled)", async(function()
    local a = lasync.spawn(function() return 1 end)
    local b = lasync.spawn(function() error("x") end)
    local c = lasync.spawn(function() lasync.sleep(1000) end)
    lasync.sleep(0)
    c:cancel()
    outcome(c)
    outcome(b)
    assert.is_false(a:cancel())
    assert.is_false(b:cancel())
    assert.is_false(c:cancel("again"))
    assert.equals(1, a:result())
    assert.is_false(a:cancelled())
    assert.is_false(b:cancelled())
  end))

  it("of a task that never started: its function never runs, it ends cancelled", async(function()
    local ran = false
    local t = lasync.spawn(function() ran = true end)
    assert.is_true(t:cancel("early"))
    local kind, e = outcome(t)
    assert.equals("cancelled", kind)
    assert.is_false(ran)
    assert.is_true(t:cancelled())
    assert.equals("early", e.message)
  end))

  it("twice counts two requests (cancelling), delivered once", async(function()
    local count
    local t = lasync.spawn(function()
      local ok, e = pcall(lasync.sleep, 1000)
      count = lasync.current_task():cancelling()
      error(e, 0)
    end)
    lasync.sleep(0)
    assert.equals(0, t:cancelling())
    assert.is_true(t:cancel())
    assert.is_true(t:cancel())
    assert.equals(2, t:cancelling())
    assert.equals("cancelled", (outcome(t)))
    assert.equals(2, count)
  end))

  it("a task can cancel itself: its next suspension raises", async(function()
    local log = {}
    local t = lasync.spawn(function()
      assert.is_true(lasync.current_task():cancel())
      log[#log + 1] = "still running after cancel()"
      local ok, e = pcall(lasync.sleep, 0)
      log[#log + 1] = lasync.is_cancelled(e) and "cancelled at sleep" or "not cancelled"
      error(e, 0)
    end)
    assert.equals("cancelled", (outcome(t)))
    assert.same({"still running after cancel()", "cancelled at sleep"}, log)
  end))

  it("can be called from a callback", async(function()
    local t = lasync.spawn(function() lasync.sleep(1000) end)
    lasync.get_loop():call_soon(function() t:cancel("from cb") end)
    local kind, e = outcome(t)
    assert.equals("cancelled", kind)
    assert.equals("from cb", e.message)
  end))

  it("a task waiting at a bare coroutine.yield() sees the CancelledError right there", async(function()
    -- A bare yield is a cancellation point (as in asyncio): a task polling with bare yields
    -- can be cancelled, and its pcall handlers run.
    local log = {}
    local t = lasync.spawn(function()
      local ok, e = pcall(function()
        coroutine.yield()
        log[#log + 1] = "after yield"
      end)
      log[#log + 1] = tostring(lasync.is_cancelled(e))
      error(e, 0)
    end)
    lasync.sleep(0) -- t is now at its bare yield
    t:cancel("poll no more")
    local kind, e = outcome(t)
    assert.equals("cancelled", kind)
    assert.equals("poll no more", e.message)
    assert.same({"true"}, log)
  end))

  it("a user's debug hook on the task's coroutine survives a cancellation at a bare yield", async(function()
    local hits = 0
    local t = lasync.spawn(function()
      debug.sethook(function() hits = hits + 1 end, "", 1000)
      local ok, e = pcall(function() coroutine.yield(); return "not reached" end)
      local h, _, count = debug.gethook()
      return ok, lasync.is_cancelled(e), h ~= nil, count
    end)
    lasync.sleep(0)
    t:cancel()
    local kind, ok, was_cancel, restored, count = outcome(t)
    assert.equals("ok", kind)
    assert.is_false(ok)
    assert.is_true(was_cancel)
    assert.is_true(restored)
    assert.equals(1000, count)
  end))
end)

describe("cancellation racing a result", function()
  it("a task whose awaited future is already done receives the result; the cancel comes next",
    async(function()
    local f = lasync.future()
    local log = {}
    local t = lasync.spawn(function()
      log[#log + 1] = "got " .. f:await()
      local ok, e = pcall(lasync.sleep, 0)
      log[#log + 1] = lasync.is_cancelled(e) and "cancelled at next suspension" or "not cancelled"
      error(e, 0)
    end)
    lasync.sleep(0)
    f:set_result("item") -- the wakeup is now on its way
    assert.is_true(t:cancel())
    assert.equals("cancelled", (outcome(t)))
    assert.same({"got item", "cancelled at next suspension"}, log)
    assert.is_false(f:cancelled())
  end))

  it("the pending cancel is delivered at the next await of a pending future", async(function()
    local f, g = lasync.future(), lasync.future()
    local log = {}
    local t = lasync.spawn(function()
      log[#log + 1] = f:await()
      local done = lasync.future()
      done:set_result("done one")
      log[#log + 1] = done:await() -- done: returns at once, no suspension, no cancel
      local ok, e = pcall(g.await, g)
      log[#log + 1] = lasync.is_cancelled(e) and "cancelled" or "?"
      error(e, 0)
    end)
    lasync.sleep(0)
    f:set_result("first")
    t:cancel()
    assert.equals("cancelled", (outcome(t)))
    assert.same({"first", "done one", "cancelled"}, log)
  end))
end)

describe("cancellation and awaiting tasks", function()
  it("awaiting a cancelled task raises CancelledError; the awaiter itself is not cancelled", async(function()
    local child = lasync.spawn(function() lasync.sleep(1000) end)
    local parent = lasync.spawn(function()
      local ok, e = pcall(child.await, child)
      assert.is_false(ok)
      assert.is_true(lasync.is_cancelled(e))
      return "parent went on"
    end)
    lasync.sleep(0)
    child:cancel()
    assert.same({"ok", "parent went on"}, {outcome(parent)})
    assert.is_true(child:cancelled())
    assert.is_false(parent:cancelled())
  end))

  it("cancelling a task that awaits another task cancels that child", async(function()
    local log = {}
    local child = lasync.spawn(function()
      local ok, e = pcall(lasync.sleep, 1000)
      log[#log + 1] = "child:" .. tostring(lasync.is_cancelled(e))
      error(e, 0)
    end)
    local parent = lasync.spawn(function() return child:await() end)
    lasync.sleep(0)
    parent:cancel("stop all")
    assert.equals("cancelled", (outcome(parent)))
    assert.equals("cancelled", (outcome(child)))
    assert.same({"child:true"}, log)
  end))

  it("cancels a chain of awaiting tasks down to the leaf", async(function()
    local leaf_cancelled = false
    local function level(n)
      if n == 0 then
        local ok, e = pcall(lasync.sleep, 1000)
        leaf_cancelled = lasync.is_cancelled(e)
        error(e, 0)
      end
      return lasync.spawn(level, n - 1):await()
    end
    local top = lasync.spawn(level, 10)
    for _ = 1, 12 do lasync.sleep(0) end
    top:cancel()
    assert.equals("cancelled", (outcome(top)))
    assert.is_true(leaf_cancelled)
  end))
end)

describe("cancellation and await cycles", function()
  it("cancelling one of two tasks awaiting each other ends both cancelled, with no crash",
    async(function()
      local a, b
      a = lasync.spawn(function() lasync.sleep(0); return b:await() end)
      b = lasync.spawn(function() lasync.sleep(0); return a:await() end)
      lasync.sleep(0.01)
      assert.is_true(a:cancel())
      assert.is_true(lasync.is_cancelled(select(2, pcall(a.await, a))))
      assert.is_true(lasync.is_cancelled(select(2, pcall(b.await, b))))
    end))

  it("a run that ends with such a cycle left over finishes cleanly", function()
    local ok, v = pcall(lasync.run, function()
      local a, b
      a = lasync.spawn(function() lasync.sleep(0); return b:await() end)
      b = lasync.spawn(function() lasync.sleep(0); return a:await() end)
      lasync.sleep(0.01)
      return "main done"
    end)
    assert.is_true(ok, tostring(v))
    assert.equals("main done", v)
  end)
end)

describe("catching CancelledError", function()
  it("a task may catch it, uncancel, and go on to return normally", async(function()
    local t = lasync.spawn(function()
      local me = lasync.current_task()
      local ok, e = pcall(lasync.sleep, 1000)
      assert.is_true(lasync.is_cancelled(e))
      assert.equals(1, me:cancelling())
      assert.equals(0, me:uncancel())
      lasync.sleep(0) -- a later suspension is not cancelled again
      return "recovered"
    end)
    lasync.sleep(0)
    t:cancel()
    assert.same({"ok", "recovered"}, {outcome(t)})
    assert.is_false(t:cancelled())
  end))

  it("a task that swallows it and returns ends with its result, not cancelled", async(function()
    local t = lasync.spawn(function()
      pcall(lasync.sleep, 1000)
      return "swallowed"
    end)
    lasync.sleep(0)
    t:cancel()
    assert.same({"ok", "swallowed"}, {outcome(t)})
    assert.is_false(t:cancelled())
  end))

  it("a task that raises another error from its handler ends with that error", async(function()
    local t = lasync.spawn(function()
      local ok = pcall(lasync.sleep, 1000)
      error({tag = "other"})
    end)
    lasync.sleep(0)
    t:cancel()
    local kind, e = outcome(t)
    assert.equals("error", kind)
    assert.equals("other", e.tag)
    assert.is_false(t:cancelled())
  end))
end)
