-- Futures: lasync.future and its methods (SPEC 1.6, 2 "tasks and futures").
local lasync = require "lasync"
local async = require "lasync.busted"

local function errof(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

describe("a Future", function()
  it("starts pending", async(function()
    local f = lasync.future()
    assert.is_false(f:done())
    assert.is_false(f:cancelled())
    assert.equals("Future<pending>", tostring(f))
  end))

  it("keeps several values from set_result, nils included", async(function()
    local f = lasync.future()
    f:set_result(nil, 2, nil, "four", nil)
    assert.is_true(f:done())
    assert.is_false(f:cancelled())
    assert.equals("Future<done>", tostring(f))
    assert.same({n = 5, nil, 2, nil, "four", nil}, table.pack(f:result()))
    assert.same({n = 5, nil, 2, nil, "four", nil}, table.pack(f:await()))
    assert.same({n = 5, nil, 2, nil, "four", nil}, table.pack(lasync.await(f)))
    assert.is_nil(f:error())
    assert.equals(0, select("#", f:error()) == 0 and 0 or 1)
  end))

  it("keeps zero values and a single nil apart", async(function()
    local f0, f1 = lasync.future(), lasync.future()
    f0:set_result()
    f1:set_result(nil)
    assert.equals(0, select("#", f0:result()))
    assert.equals(1, select("#", f1:result()))
    assert.equals(0, select("#", f0:await()))
    assert.equals(1, select("#", f1:await()))
  end))

  it("keeps tables, functions and tasks as results (by identity)", async(function()
    local t, fn = {}, function() end
    local f = lasync.future()
    f:set_result(t, fn, f)
    local a, b, c = f:result()
    assert.equals(t, a)
    assert.equals(fn, b)
    assert.equals(f, c)
  end))

  it("keeps many values", async(function()
    local vals = {}
    for i = 1, 200 do vals[i] = i end
    local f = lasync.future()
    f:set_result(table.unpack(vals))
    assert.same(vals, {f:await()})
  end))

  it("records an error: result and await raise it (same object), error returns it", async(function()
    local f = lasync.future()
    local e = {code = 42}
    f:set_error(e)
    assert.is_true(f:done())
    assert.is_false(f:cancelled())
    assert.equals("Future<failed>", tostring(f))
    assert.equals(e, f:error())
    assert.equals(e, errof(f.result, f))
    assert.equals(e, errof(f.await, f))
    local g = lasync.future()
    g:set_error("plain string")
    assert.equals("plain string", g:error())
    assert.equals("plain string", errof(g.result, g))
  end))

  it("refuses a nil error, naming set_error", async(function()
    local f = lasync.future()
    assert.matches("set_error", tostring(errof(f.set_error, f, nil)))
    assert.matches("set_error", tostring(errof(f.set_error, f)))
    assert.is_false(f:done())
  end))

  it("cancel: true when pending, false when done; result/error/await raise CancelledError", async(function()
    local f = lasync.future()
    assert.is_true(f:cancel("stop it"))
    assert.is_true(f:done())
    assert.is_true(f:cancelled())
    assert.equals("Future<cancelled>", tostring(f))
    assert.is_false(f:cancel())
    for _, m in ipairs({"result", "error", "await"}) do
      local e = errof(f[m], f)
      assert.equals(lasync.CancelledError, getmetatable(e))
      assert.is_true(lasync.is_cancelled(e))
      assert.equals("stop it", e.message)
    end
    local g = lasync.future()
    g:set_result(1)
    assert.is_false(g:cancel())
    assert.is_false(g:cancelled())
    assert.equals(1, g:result())
  end))

  it("cancel without a message gives a CancelledError all the same", async(function()
    local f = lasync.future()
    assert.is_true(f:cancel())
    local e = errof(f.result, f)
    assert.is_true(lasync.is_cancelled(e))
    assert.is_string(e.message)
  end))

  it("result() and error() of a pending future raise InvalidStateError", async(function()
    local f = lasync.future()
    local e = errof(f.result, f)
    assert.equals(lasync.InvalidStateError, getmetatable(e))
    assert.matches("result", tostring(e))
    local e2 = errof(f.error, f)
    assert.equals(lasync.InvalidStateError, getmetatable(e2))
  end))

  it("raises InvalidStateError when its outcome is set twice, naming the call", async(function()
    local f = lasync.future()
    f:set_result(1)
    local e = errof(f.set_result, f, 2)
    assert.equals(lasync.InvalidStateError, getmetatable(e))
    assert.matches("set_result", tostring(e))
    local e2 = errof(f.set_error, f, "x")
    assert.equals(lasync.InvalidStateError, getmetatable(e2))
    assert.matches("set_error", tostring(e2))
    assert.equals(1, f:result())
    local g = lasync.future()
    g:cancel()
    assert.equals(lasync.InvalidStateError, getmetatable(errof(g.set_result, g, 1)))
    local h = lasync.future()
    h:set_error("first")
    assert.equals(lasync.InvalidStateError, getmetatable(errof(h.set_error, h, "second")))
    assert.equals("first", h:error())
  end))

  it("methods check their receiver", async(function()
    local f = lasync.future()
    assert.matches("result", tostring(errof(f.result, {})))
    assert.matches("set_result", tostring(errof(f.set_result, 42, 1)))
    assert.is_false(f:done())
  end))
end)

describe("done callbacks", function()
  it("are scheduled with call_soon when the future completes, never called inline", async(function()
    local loop = lasync.get_loop()
    local log = {}
    local f = lasync.future()
    f:add_done_callback(function(x)
      assert.equals(f, x)
      log[#log + 1] = "done cb"
    end)
    loop:call_soon(function() log[#log + 1] = "soon before" end)
    f:set_result(1)
    log[#log + 1] = "after set_result"
    loop:call_soon(function() log[#log + 1] = "soon after" end)
    lasync.sleep(0)
    assert.same({"after set_result", "soon before", "done cb", "soon after"}, log)
  end))

  it("run in registration order, once each, for set_error and cancel too", async(function()
    local log = {}
    local f, g, h = lasync.future(), lasync.future(), lasync.future()
    for name, x in pairs({f = f, g = g, h = h}) do
      for i = 1, 3 do
        x:add_done_callback(function(y)
          assert.equals(x, y)
          log[#log + 1] = name .. i
        end)
      end
    end
    f:set_result(1)
    g:set_error("e")
    h:cancel()
    assert.same({}, log)
    lasync.sleep(0)
    lasync.sleep(0)
    assert.same({"f1", "f2", "f3", "g1", "g2", "g3", "h1", "h2", "h3"}, log)
    assert.equals("e", g:error()) -- retrieved, so not reported
  end))

  it("are scheduled with call_soon when added to a future already done", async(function()
    local log = {}
    local f = lasync.future()
    f:set_result("v")
    f:add_done_callback(function(x) log[#log + 1] = x:result() end)
    assert.same({}, log)
    lasync.sleep(0)
    assert.same({"v"}, log)
  end))

  it("can be removed (returns how many) and then never run", async(function()
    local log = {}
    local f = lasync.future()
    local function a() log[#log + 1] = "a" end
    local function b() log[#log + 1] = "b" end
    f:add_done_callback(a)
    f:add_done_callback(b)
    f:add_done_callback(a)
    assert.equals(2, f:remove_done_callback(a))
    assert.equals(0, f:remove_done_callback(function() end))
    f:set_result()
    lasync.sleep(0)
    lasync.sleep(0)
    assert.same({"b"}, log)
  end))

  it("a failing callback is reported to the exception handler and the others still run", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    local reports = {}
    loop:set_exception_handler(function(l, ctx)
      assert.equals(loop, l)
      reports[#reports + 1] = ctx
    end)
    local log = {}
    local f = lasync.future()
    f:add_done_callback(function() error("cb failed") end)
    f:add_done_callback(function() log[#log + 1] = "second" end)
    f:set_result()
    lasync.sleep(0)
    loop:set_exception_handler(old)
    assert.same({"second"}, log)
    assert.equals(1, #reports)
    assert.matches("callback", reports[1].message)
    assert.matches("cb failed", tostring(reports[1].error))
  end))

  it("a callback added inside a done callback still runs", async(function()
    local log = {}
    local f = lasync.future()
    f:add_done_callback(function(x)
      log[#log + 1] = "first"
      x:add_done_callback(function() log[#log + 1] = "nested" end)
    end)
    f:set_result()
    lasync.sleep(0)
    lasync.sleep(0)
    assert.same({"first", "nested"}, log)
  end))
end)

describe("awaiting a future", function()
  it("wakes every task waiting on it, with the values", async(function()
    local f = lasync.future()
    local ts = {}
    for i = 1, 5 do ts[i] = lasync.spawn(function() return i, f:await() end) end
    lasync.sleep(0)
    for i = 1, 5 do assert.is_false(ts[i]:done()) end
    f:set_result("x", nil)
    for i = 1, 5 do assert.same({n = 3, i, "x", nil}, table.pack(ts[i]:await())) end
  end))

  it("raises its error in every waiting task", async(function()
    local f = lasync.future()
    local e = {}
    local ts = {}
    for i = 1, 3 do
      ts[i] = lasync.spawn(function()
        local ok, got = pcall(f.await, f)
        return ok, got
      end)
    end
    lasync.sleep(0)
    f:set_error(e)
    for i = 1, 3 do
      local ok, got = ts[i]:await()
      assert.is_false(ok)
      assert.equals(e, got)
    end
  end))

  it("raises CancelledError in the waiters when cancelled, with its message", async(function()
    local f = lasync.future()
    local t = lasync.spawn(function()
      local ok, e = pcall(f.await, f)
      return ok, lasync.is_cancelled(e), e.message
    end)
    lasync.sleep(0)
    f:cancel("gone")
    local ok, isc, msg = t:await()
    assert.is_false(ok)
    assert.is_true(isc)
    assert.equals("gone", msg)
    -- cancelling the future does not cancel the waiting task
    assert.is_false(t:cancelled())
  end))
end)
