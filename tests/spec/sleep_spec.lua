-- lasync.sleep and loop timing: call_soon / call_later / call_at, handles, loop:time
-- (SPEC 1.4, 1.5, 2 "running").
local lasync = require "lasync"
local async = require "lasync.busted"

local iteration_counter = async.iteration_counter

local function errmsg(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end

-- Collects the loop's reports for the duration of fn, then restores the handler.
local function capture_reports(fn)
  local loop = lasync.get_loop()
  local old = loop:get_exception_handler()
  local reports = {}
  loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
  local ok, e = pcall(fn)
  loop:set_exception_handler(old)
  if not ok then error(e, 0) end
  return reports
end

describe("lasync.sleep(0)", function()
  it("gives up exactly one iteration: everything ready before it runs first", async(function()
    local loop = lasync.get_loop()
    local log = {}
    loop:call_soon(function()
      log[#log + 1] = "cb1"
      loop:call_soon(function() log[#log + 1] = "added during the iteration" end)
    end)
    lasync.spawn(function()
      log[#log + 1] = "task step"
      lasync.sleep(0)
      log[#log + 1] = "task second step"
    end)
    loop:call_soon(function() log[#log + 1] = "cb2" end)
    lasync.sleep(0)
    log[#log + 1] = "sleeper"
    assert.same({"cb1", "task step", "cb2", "sleeper"}, log)
    lasync.sleep(0)
    assert.same({"cb1", "task step", "cb2", "sleeper", "added during the iteration", "task second step"},
      log)
  end))

  it("each sleep(0) is one iteration of an iteration counter", async(function()
    local c = iteration_counter()
    lasync.sleep(0)
    local base = c.n
    for _ = 1, 10 do lasync.sleep(0) end
    local n = c.n - base
    c.stop()
    assert.equals(10, n)
  end))

  it("a negative delay behaves as 0", async(function()
    local c = iteration_counter()
    lasync.sleep(0)
    local base = c.n
    lasync.sleep(-5)
    local n = c.n - base
    c.stop()
    assert.equals(1, n)
  end))

  it("returns the extra arguments, nils included", async(function()
    assert.same({n = 4, 1, nil, "x", nil}, table.pack(lasync.sleep(0, 1, nil, "x", nil)))
    assert.same({n = 2, "a", "b"}, table.pack(lasync.sleep(0.001, "a", "b")))
    assert.equals(0, select("#", lasync.sleep(0)))
  end))
end)

describe("lasync.sleep(delay)", function()
  it("waits at least the delay, measured by loop:time()", async(function()
    local loop = lasync.get_loop()
    local t0 = loop:time()
    lasync.sleep(0.05)
    local dt = loop:time() - t0
    assert.is_true(dt >= 0.045, "slept only " .. dt)
    assert.is_true(dt < 3, "slept " .. dt) -- generous
  end))

  it("wakes sleepers in deadline order, not in spawn order", async(function()
    local log = {}
    local ts = {}
    for _, d in ipairs({0.03, 0.01, 0.02, 0.001}) do
      ts[#ts + 1] = lasync.spawn(function()
        lasync.sleep(d)
        log[#log + 1] = d
      end)
    end
    for _, t in ipairs(ts) do t:await() end
    assert.same({0.001, 0.01, 0.02, 0.03}, log)
  end))

  it("lets other tasks and callbacks run while it waits", async(function()
    local count = 0
    local worker = lasync.spawn(function()
      for _ = 1, 5 do
        count = count + 1
        lasync.sleep(0)
      end
    end)
    lasync.sleep(0.02)
    assert.equals(5, count)
    worker:await()
  end))

  it("rejects a NaN or non-number delay, naming lasync.sleep", async(function()
    assert.matches("lasync.sleep", errmsg(lasync.sleep, 0 / 0))
    assert.matches("sleep", errmsg(lasync.sleep, "soon"))
    assert.matches("sleep", errmsg(lasync.sleep))
  end))
end)

describe("loop:time", function()
  it("is a monotonic float, non-decreasing, advancing with sleeps", async(function()
    local loop = lasync.get_loop()
    local prev = loop:time()
    assert.equals("number", type(prev))
    assert.equals("float", math.type(prev))
    for _ = 1, 1000 do
      local now = loop:time()
      assert.is_true(now >= prev)
      prev = now
    end
    local a = loop:time()
    lasync.sleep(0.01)
    assert.is_true(loop:time() > a)
  end))
end)

describe("loop:call_soon", function()
  it("runs callbacks FIFO with their arguments, nils included", async(function()
    local loop = lasync.get_loop()
    local log = {}
    for i = 1, 5 do
      loop:call_soon(function(...) log[#log + 1] = table.pack(...) end, i, nil, "z", nil)
    end
    lasync.sleep(0)
    for i = 1, 5 do assert.same({n = 4, i, nil, "z", nil}, log[i]) end
  end))

  it("accepts a callable table", async(function()
    local got
    lasync.get_loop():call_soon(setmetatable({}, {__call = function(self, x) got = x end}), "v")
    lasync.sleep(0)
    assert.equals("v", got)
  end))

  it("runs callbacks added during an iteration in the next one", async(function()
    local loop = lasync.get_loop()
    local c = iteration_counter()
    lasync.sleep(0)
    local at = {}
    loop:call_soon(function()
      at.first = c.n
      loop:call_soon(function() at.second = c.n end)
    end)
    lasync.sleep(0)
    lasync.sleep(0)
    c.stop()
    assert.equals(at.first + 1, at.second)
  end))

  it("returns a handle whose cancel() stops the callback", async(function()
    local loop = lasync.get_loop()
    local ran = {}
    local h1 = loop:call_soon(function() ran[#ran + 1] = 1 end)
    local h2 = loop:call_soon(function() ran[#ran + 1] = 2 end)
    assert.is_false(h1:cancelled())
    h1:cancel()
    assert.is_true(h1:cancelled())
    h1:cancel() -- twice is fine
    lasync.sleep(0)
    assert.same({2}, ran)
    assert.is_false(h2:cancelled())
  end))

  it("a callback can cancel a later callback of the same iteration", async(function()
    local loop = lasync.get_loop()
    local ran = {}
    local h2
    loop:call_soon(function() ran[#ran + 1] = 1; h2:cancel() end)
    h2 = loop:call_soon(function() ran[#ran + 1] = 2 end)
    lasync.sleep(0)
    lasync.sleep(0)
    assert.same({1}, ran)
  end))

  it("rejects a non-callable, naming call_soon", async(function()
    local loop = lasync.get_loop()
    assert.matches("call_soon", errmsg(loop.call_soon, loop, 42))
    assert.matches("call_soon", errmsg(loop.call_soon, loop))
  end))

  it("reports a failing callback to the exception handler and goes on", async(function()
    local loop = lasync.get_loop()
    local after = false
    local reports = capture_reports(function()
      loop:call_soon(function() error("callback boom") end)
      loop:call_soon(function() after = true end)
      lasync.sleep(0)
    end)
    assert.is_true(after)
    assert.equals(1, #reports)
    assert.matches("callback", reports[1].message)
    assert.matches("callback boom", tostring(reports[1].error))
  end))
end)

describe("loop:call_later and loop:call_at", function()
  it("call_later runs after the delay, with arguments", async(function()
    local loop = lasync.get_loop()
    local t0 = loop:time()
    local f = lasync.future()
    loop:call_later(0.03, function(a, b, c) f:set_result(loop:time(), a, b, c) end, "a", nil, "c")
    local r = table.pack(f:await())
    assert.is_true(r[1] - t0 >= 0.025, "fired after " .. (r[1] - t0))
    assert.same({"a", nil, "c"}, {r[2], r[3], r[4]})
    assert.equals(4, r.n)
  end))

  it("call_later fires timers in deadline order", async(function()
    local loop = lasync.get_loop()
    local log = {}
    local f = lasync.future()
    loop:call_later(0.03, function() log[#log + 1] = 3; f:set_result() end)
    loop:call_later(0.01, function() log[#log + 1] = 1 end)
    loop:call_later(0.02, function() log[#log + 1] = 2 end)
    f:await()
    assert.same({1, 2, 3}, log)
  end))

  it("timers with the same deadline fire in the order they were scheduled", async(function()
    local loop = lasync.get_loop()
    local when = loop:time() + 0.01
    local log = {}
    for i = 1, 50 do loop:call_at(when, function() log[#log + 1] = i end) end
    lasync.sleep(0.03)
    lasync.sleep(0)
    local want = {}
    for i = 1, 50 do want[i] = i end
    assert.same(want, log)
  end))

  it("call_later(0) runs on a later iteration, not inline", async(function()
    local loop = lasync.get_loop()
    local ran = false
    loop:call_later(0, function() ran = true end)
    assert.is_false(ran)
    lasync.sleep(0.001)
    lasync.sleep(0)
    assert.is_true(ran)
  end))

  it("call_at with a time long past (any negative one too) runs at once and stalls no timer", async(function()
    local loop = lasync.get_loop()
    local ran = {}
    for _, t in ipairs({ -1, -2, 0 }) do
      local h = loop:call_at(t, function() ran[#ran + 1] = t end)
      assert.equal(t, h:when())
    end
    lasync.sleep(0.01)  -- a timer after them still wakes
    assert.same({ -2, -1, 0 }, ran)
  end))

  it("a handle cancelled by its own callback says it is cancelled", async(function()
    local h, inside
    h = lasync.get_loop():call_soon(function() h:cancel(); inside = h:cancelled() end)
    lasync.sleep(0)
    assert.is_true(inside)
    assert.is_true(h:cancelled())
  end))

  it("call_at runs at an absolute loop time, and the handle knows when", async(function()
    local loop = lasync.get_loop()
    local when = loop:time() + 0.02
    local f = lasync.future()
    local h = loop:call_at(when, function() f:set_result(loop:time()) end)
    assert.is_true(math.abs(h:when() - when) < 1e-6)
    local fired = f:await()
    assert.is_true(fired >= when - 0.002, ("fired %.4f before %.4f"):format(fired, when))
  end))

  it("call_at in the past runs soon", async(function()
    local loop = lasync.get_loop()
    local f = lasync.future()
    loop:call_at(loop:time() - 10, f.set_result, f, "past")
    assert.equals("past", f:await())
  end))

  it("a cancelled timer never runs and no longer counts as pending", async(function()
    local loop = lasync.get_loop()
    local ran = false
    local _, timers0 = loop:stats()
    local h = loop:call_later(0.01, function() ran = true end)
    local h2 = loop:call_at(loop:time() + 0.01, function() ran = true end)
    local _, timers1 = loop:stats()
    assert.equals(timers0 + 2, timers1)
    h:cancel()
    h2:cancel()
    assert.is_true(h:cancelled())
    assert.is_true(h2:cancelled())
    local _, timers2 = loop:stats()
    assert.equals(timers0, timers2)
    lasync.sleep(0.03)
    assert.is_false(ran)
  end))

  it("cancelling a handle after it ran is harmless", async(function()
    local loop = lasync.get_loop()
    local n = 0
    local h = loop:call_later(0, function() n = n + 1 end)
    lasync.sleep(0.005)
    lasync.sleep(0)
    assert.equals(1, n)
    h:cancel()
    lasync.sleep(0)
    assert.equals(1, n)
  end))

  it("a handle dropped by Lua still fires (the loop keeps it)", async(function()
    local loop = lasync.get_loop()
    local n = 0
    for _ = 1, 20 do loop:call_later(0.002, function() n = n + 1 end) end
    collectgarbage("collect")
    collectgarbage("collect")
    lasync.sleep(0.02)
    lasync.sleep(0)
    assert.equals(20, n)
  end))

  it("rejects a NaN delay for call_later, as call_at and sleep reject NaN", async(function()
    local loop = lasync.get_loop()
    local fired = false
    local ok, e = pcall(loop.call_later, loop, 0 / 0, function() fired = true end)
    if ok then e:cancel() end -- do not leave the timer behind if it was accepted
    assert.is_false(ok, "loop:call_later(NaN) was accepted (and would fire at once)")
    assert.matches("call_later", tostring(e))
  end))

  it("rejects NaN times and non-callables, naming the call", async(function()
    local loop = lasync.get_loop()
    assert.matches("call_at", errmsg(loop.call_at, loop, 0 / 0, function() end))
    assert.matches("call_later", errmsg(loop.call_later, loop, 1, "nope"))
    assert.matches("call_at", errmsg(loop.call_at, loop, 1, nil))
  end))
end)
