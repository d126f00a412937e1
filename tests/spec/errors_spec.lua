-- Errors: classes, tracebacks across awaits, unretrieved errors (SPEC 2 "errors").
local lasync = require "lasync"
local async = require "lasync.busted"

local function taskno(t) return tonumber(t:get_name():match("^Task%-(%d+)$")) end

-- Runs fn as the main task of a fresh loop with an exception handler that records every
-- report (also those made while the loop closes); returns the reports and run's results.
local function run_capturing(fn)
  local reports = {}
  local r = table.pack(pcall(lasync.run, function()
    lasync.get_loop():set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
    return fn(reports)
  end))
  return reports, r
end

describe("error classes", function()
  for _, name in ipairs({"CancelledError", "TimeoutError", "InvalidStateError"}) do
    it(name .. " makes instances with message, traceback, __tostring and its class as metatable", function()
      local cls = lasync[name]
      assert.is_table(cls)
      local function make_here() return cls("the message") end
      local e = make_here()
      assert.equals(cls, getmetatable(e))
      assert.equals("the message", e.message)
      assert.is_string(e.traceback)
      assert.matches("errors_spec.lua", e.traceback)
      assert.matches(name, tostring(e))
      assert.matches("the message", tostring(e))
      assert.matches(name, getmetatable(e).__name)
      local bare = cls()
      assert.equals(cls, getmetatable(bare))
      assert.equals(name, tostring(bare))
    end)
  end

  it("is_cancelled / is_timeout recognise their class only", function()
    local c, t, i = lasync.CancelledError("c"), lasync.TimeoutError("t"), lasync.InvalidStateError("i")
    assert.is_true(lasync.is_cancelled(c))
    assert.is_false(lasync.is_cancelled(t))
    assert.is_false(lasync.is_cancelled(i))
    assert.is_true(lasync.is_timeout(t))
    assert.is_false(lasync.is_timeout(c))
    assert.is_false(lasync.is_timeout(i))
    for _, v in ipairs({"CancelledError", {}, 42, true}) do
      assert.is_false(lasync.is_cancelled(v))
      assert.is_false(lasync.is_timeout(v))
    end
    assert.is_false(lasync.is_cancelled(nil))
    assert.is_false(lasync.is_timeout())
    -- a look-alike table is not an instance
    assert.is_false(lasync.is_cancelled(setmetatable({}, {__name = "lasync.CancelledError"})))
  end)

  it("a CancelledError lasync raises has a message, a traceback and a __tostring too", async(function()
    local inside
    local t = lasync.spawn(function()
      local ok, e = pcall(lasync.sleep, 10)
      inside = e
      error(e, 0)
    end)
    lasync.sleep(0)
    t:cancel("why")
    local f = lasync.future()
    f:cancel()
    local errors = {inside = false, awaited = select(2, pcall(t.await, t)),
                    result = select(2, pcall(f.result, f)), error = select(2, pcall(f.error, f))}
    errors.inside = inside
    for how, e in pairs(errors) do
      assert.is_true(lasync.is_cancelled(e), how)
      assert.is_string(e.message, how)
      assert.is_string(e.traceback, how)
      assert.matches("^CancelledError: " .. e.message, tostring(e))
    end
    assert.equals("why", errors.awaited.message)
  end))

  it("instances can be raised and caught as ordinary Lua errors", function()
    local ok, e = pcall(error, lasync.TimeoutError("late"))
    assert.is_false(ok)
    assert.is_true(lasync.is_timeout(e))
    assert.equals("late", e.message)
  end)
end)

describe("an error crossing an await", function()
  it("a table error gets a traceback naming where it was raised, and the awaiting task", async(function()
    local child
    local function raise_deep()
      lasync.sleep(0)
      error({tag = "deep"}) -- line of the raise
    end
    local raise_line = debug.getinfo(1, "l").currentline - 2
    child = lasync.spawn(function() raise_deep() end)
    local me = lasync.current_task()
    local ok, e = pcall(function() return child:await() end)
    assert.is_false(ok)
    assert.equals("deep", e.tag)
    assert.is_string(e.traceback)
    assert.matches("errors_spec.lua:" .. raise_line, e.traceback)
    assert.matches("raise_deep", e.traceback)
    assert.matches("awaited by Task%-" .. taskno(me), e.traceback)
  end))

  it("keeps the traceback of an error class instance created where it was raised", async(function()
    local function thrower()
      lasync.sleep(0)
      error(lasync.TimeoutError("deadline"))
    end
    local line = debug.getinfo(1, "l").currentline - 2
    local t = lasync.spawn(function() thrower() end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(lasync.is_timeout(e))
    assert.matches("errors_spec.lua:" .. line, e.traceback)
    assert.matches("thrower", e.traceback)
    assert.matches("awaited by Task%-%d+", e.traceback)
  end))

  it("shows the chain of tasks, innermost first", async(function()
    local inner, middle
    inner = lasync.spawn(function() lasync.sleep(0) error({tag = "x"}) end)
    middle = lasync.spawn(function() return inner:await() end)
    local ok, e = pcall(middle.await, middle)
    assert.is_false(ok)
    local tb = e.traceback
    local me = lasync.current_task()
    local p1 = tb:find("awaited by Task%-" .. taskno(middle) .. "%f[%D]")
    local p2 = tb:find("awaited by Task%-" .. taskno(me) .. "%f[%D]")
    assert.is_truthy(p1, tb)
    assert.is_truthy(p2, tb)
    assert.is_true(p1 < p2, tb)
  end))

  it("retrieving the same error again does not grow its traceback", async(function()
    -- the error table is shared by every retrieval: each await must not append to it again
    -- (10,000 tasks awaiting one failed task would otherwise build a 10,000-line traceback)
    local t = lasync.spawn(function() lasync.sleep(0) error({tag = "once"}) end)
    local me = lasync.current_task()
    local e
    for _ = 1, 50 do e = select(2, pcall(t.await, t)) end
    local _, mine = e.traceback:gsub("awaited by Task%-" .. taskno(me) .. "%f[%D]", "")
    assert.equals(1, mine, e.traceback)
    local waiters = {}
    for i = 1, 20 do waiters[i] = lasync.spawn(function() return select(2, pcall(t.await, t)) end) end
    for i = 1, 20 do waiters[i]:await() end
    local _, lines = e.traceback:gsub("\n", "")
    assert.is_true(lines < 20, "traceback grew to " .. lines .. " lines:\n" .. e.traceback)
  end))

  it("through gather, wait_for and task_group, the chain names the caller's task and line",
    async(function()
      local me = lasync.current_task()
      local function fail() lasync.sleep(0) error({tag = "child"}) end
      local calls = {
        function() lasync.gather(fail) end,
        function() lasync.wait_for(fail, 10) end,
        function() lasync.task_group(function(tg) tg:spawn(fail) end) end,
      }
      for _, call in ipairs(calls) do
        local line = debug.getinfo(call, "S").linedefined
        local ok, e = pcall(call)
        assert.is_false(ok)
        assert.equals("child", e.tag)
        assert.matches("awaited by Task%-" .. taskno(me) .. " at [^\n]*errors_spec.lua:" .. line,
          e.traceback)
      end
    end))

  it("a string error keeps its position and message", async(function()
    local t = lasync.spawn(function()
      lasync.sleep(0)
      error("plain message")
    end)
    local line = debug.getinfo(1, "l").currentline - 2
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.equals("string", type(e))
    assert.matches("errors_spec.lua:" .. line .. ": plain message", e)
  end))

  it("a string error raised afresh gets its own traceback, not that of an earlier same text",
    async(function()
      local function check(x) if not x then error("invalid input", 0) end end
      local a
      local b = lasync.spawn(function()
        a = lasync.spawn(check, false)
        assert(not pcall(a.await, a))  -- b handles a's error...
        lasync.sleep(0)
        check(false)                   -- ...then raises the same text itself
      end)
      local ok, e = pcall(b.await, b)
      assert.is_false(ok)
      local tb = lasync.traceback(e)
      assert.matches(b:get_name() .. ": invalid input", tb, 1, true)
      assert.is_nil(tb:find(a:get_name() .. ":", 1, true))
    end))

  it("non-string, non-table errors pass through unchanged", async(function()
    for _, v in ipairs({42, true}) do
      local t = lasync.spawn(function() lasync.sleep(0) error(v) end)
      local ok, e = pcall(t.await, t)
      assert.is_false(ok)
      assert.equals(v, e)
    end
    local f = lasync.future()
    local ud = io.stdout
    f:set_error(ud)
    assert.equals(ud, select(2, pcall(f.await, f)))
  end))

  it("a table error with a traceback field of its own keeps that field's start", async(function()
    local t = lasync.spawn(function()
      lasync.sleep(0)
      error({traceback = "MY TRACEBACK"})
    end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.matches("^MY TRACEBACK", e.traceback)
  end))

  it("lasync.run re-raises the main task's error with the traceback of the raise", function()
    local function raiser()
      lasync.sleep(0)
      error(lasync.InvalidStateError("main failed"))
    end
    local line = debug.getinfo(1, "l").currentline - 2
    local ok, e = pcall(lasync.run, raiser)
    assert.is_false(ok)
    assert.equals(lasync.InvalidStateError, getmetatable(e))
    assert.equals("main failed", e.message)
    assert.matches("errors_spec.lua:" .. line, e.traceback)
  end)
end)

describe("unretrieved errors", function()
  it("a task error nobody retrieves is reported once through the exception handler", function()
    local tb_line
    local reports = run_capturing(function()
      lasync.spawn(function()
        tb_line = debug.getinfo(1, "l").currentline + 1
        error({tag = "lost"})
      end)
      lasync.sleep(0)
      lasync.sleep(0)
      collectgarbage("collect")
      collectgarbage("collect")
      lasync.sleep(0)
    end)
    assert.equals(1, #reports)
    local ctx = reports[1]
    assert.matches("never retrieved", ctx.message)
    assert.equals("lost", ctx.error.tag)
    assert.is_not_nil(ctx.task)
    local tb = ctx.traceback or ctx.error.traceback
    assert.matches("errors_spec.lua:" .. tb_line, tb)
  end)

  it("the task in a report made at collection stays usable after the handler returns", function()
    local name_inside, saved
    run_capturing(function()
      lasync.get_loop():set_exception_handler(function(_, ctx)
        name_inside = ctx.task and ctx.task:get_name()
        saved = ctx -- kept past the handler, as a logger would
      end)
      lasync.spawn(function() error("lost") end)
      lasync.sleep(0)
      collectgarbage("collect")
      collectgarbage("collect")
      lasync.sleep(0)
    end)
    local ctx = saved
    assert.is_string(name_inside)
    local ok, name = pcall(function() return ctx.task:get_name() end)
    assert.is_true(ok, tostring(name))
    assert.equals(name_inside, name)
    local ok2, done = pcall(function() return ctx.task:done() end)
    assert.is_true(ok2, tostring(done))
    assert.is_true(done)
  end)

  it("is reported at loop close when the task is still referenced", function()
    local keep
    local reports = run_capturing(function()
      keep = lasync.spawn(function() error("kept but unread") end)
      lasync.sleep(0)
    end)
    assert.equals(1, #reports)
    assert.matches("never retrieved", reports[1].message)
    assert.matches("kept but unread", tostring(reports[1].error))
    assert.equals(keep, reports[1].task)
    -- collecting it afterwards does not report it a second time (the handler is gone: stderr)
    keep = nil
    collectgarbage("collect")
  end)

  it("a future error nobody retrieves is reported too", function()
    local f
    local reports = run_capturing(function()
      f = lasync.future()
      f:set_error("future lost")
    end)
    assert.equals(1, #reports)
    assert.matches("Future exception was never retrieved", reports[1].message)
    assert.equals("future lost", reports[1].error)
    assert.equals(f, reports[1].future)
  end)

  it("is not reported when retrieved by await, result() or error()", function()
    local reports = run_capturing(function()
      local a = lasync.spawn(function() error("a") end)
      local b = lasync.spawn(function() error("b") end)
      local c = lasync.spawn(function() error("c") end)
      local f = lasync.future()
      f:set_error("f")
      lasync.sleep(0)
      pcall(a.await, a)
      pcall(b.result, b)
      c:error()
      f:error()
      collectgarbage("collect")
    end)
    assert.same({}, reports)
  end)

  it("a cancelled task is not an unretrieved error", function()
    local reports = run_capturing(function()
      local t = lasync.spawn(function() lasync.sleep(1000) end)
      lasync.sleep(0)
      t:cancel()
      lasync.sleep(0)
      lasync.sleep(0)
    end)
    assert.same({}, reports)
  end)

  it("the main task's error is raised by run, not reported", function()
    local reports, r = run_capturing(function() error("main error") end)
    assert.is_false(r[1])
    assert.matches("main error", r[2])
    assert.same({}, reports)
  end)

  it("many lost errors are each reported exactly once", function()
    local reports = run_capturing(function()
      for i = 1, 30 do lasync.spawn(function() error("lost " .. i, 0) end) end
      lasync.sleep(0)
      collectgarbage("collect")
      lasync.sleep(0)
    end)
    assert.equals(30, #reports)
    local seen = {}
    for _, ctx in ipairs(reports) do
      assert.is_nil(seen[ctx.error])
      seen[ctx.error] = true
    end
  end)

  it("go to stderr, with the error and the traceback, when no handler is set", function()
    local BUILD = os.getenv("LASYNC_BUILD") or "build"
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write([[
local lasync = require "lasync"
local function lost_in_function() error("nobody reads me") end
lasync.spawn(function() lost_in_function() end)
lasync.sleep(0)
]])
    fh:close()
    local errf = os.tmpname()
    local ok, how, code = os.execute(("'%s/bin/lasync' '%s' >/dev/null 2>'%s'"):format(BUILD, path, errf))
    local rf = assert(io.open(errf))
    local err = rf:read("a")
    rf:close()
    os.remove(path)
    os.remove(errf)
    assert.equals(0, code)
    assert.matches("never retrieved", err)
    assert.matches("nobody reads me", err)
    assert.matches("lost_in_function", err)
  end)
end)

describe("the exception handler", function()
  it("can be set, read back and reset to the default with nil", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    local function h() end
    loop:set_exception_handler(h)
    assert.equals(h, loop:get_exception_handler())
    loop:set_exception_handler(nil)
    assert.is_nil(loop:get_exception_handler())
    loop:set_exception_handler(old)
    assert.matches("set_exception_handler", tostring(select(2, pcall(loop.set_exception_handler, loop, 42))))
  end))

  it("gets the loop and a context with message, error, task and traceback", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    local got = {}
    loop:set_exception_handler(function(l, ctx) got[#got + 1] = {l, ctx} end)
    local t = lasync.spawn(function() error({tag = "ctx"}) end)
    lasync.sleep(0)
    -- retrieve nothing; force the report at collection by dropping every reference
    t = nil
    for _ = 1, 3 do
      collectgarbage("collect")
      lasync.sleep(0)
    end
    loop:call_exception_handler({message = "by hand", error = "E"})
    loop:set_exception_handler(old)
    assert.equals(2, #got)
    assert.equals(loop, got[1][1])
    local ctx = got[1][2]
    assert.matches("never retrieved", ctx.message)
    assert.equals("ctx", ctx.error.tag)
    assert.is_not_nil(ctx.task)
    assert.is_string(ctx.traceback or ctx.error.traceback)
    assert.equals("by hand", got[2][2].message)
    assert.equals("E", got[2][2].error)
  end))

  it("gets a callback's error as raised, with the traceback beside it", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    local got = {}
    loop:set_exception_handler(function(_, ctx) got[#got + 1] = ctx end)
    loop:call_soon(function() error(42) end)
    loop:call_soon(function() error("plain", 0) end)
    local f = lasync.future()
    f:add_done_callback(function() error(false) end)
    f:set_result()
    lasync.sleep(0)
    lasync.sleep(0)
    loop:set_exception_handler(old)
    assert.equals(3, #got)
    assert.same({ 42, "plain", false }, { got[1].error, got[2].error, got[3].error })
    for i = 1, 3 do assert.matches("errors_spec.lua", got[i].traceback, 1, true) end
  end))

  it("gets the traceback beside a callback's table error that has none of its own", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    local got = {}
    loop:set_exception_handler(function(_, ctx) got[#got + 1] = ctx end)
    local e = {code = 1}
    loop:call_soon(function() error(e) end)
    local own = lasync.TimeoutError("with its own")
    loop:call_soon(function() error(own) end)
    lasync.sleep(0)
    loop:set_exception_handler(old)
    assert.equals(2, #got)
    assert.equals(e, got[1].error)
    assert.is_string(got[1].traceback)
    assert.matches("errors_spec.lua", got[1].traceback, 1, true)
    assert.equals(own, got[2].error)
    assert.is_nil(got[2].traceback) -- the error's own traceback field says it
  end))
end)
