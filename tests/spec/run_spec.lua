-- lasync.run, lasync.get_loop, the loop's lifetime and the `lasync` runner (SPEC 2 "running").
local lasync = require "lasync"
local async = require "lasync.busted"

local function errmsg(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(e), e
end

describe("lasync.run", function()
  it("runs fn(...) as the main task and returns all its results, nils included", function()
    local seen
    local r = table.pack(lasync.run(function(...)
      seen = table.pack(...)
      assert.is_not_nil(lasync.current_task())
      return nil, "b", nil, ...
    end, 1, nil, 3))
    assert.same({n = 3, 1, nil, 3}, seen)
    assert.same({n = 6, nil, "b", nil, 1, nil, 3}, r)
  end)

  it("returns no values when fn returns none", function()
    assert.equals(0, select("#", lasync.run(function() end)))
  end)

  it("accepts a callable table", function()
    local obj = setmetatable({}, {__call = function(self, x) return x * 2 end})
    assert.equals(42, lasync.run(obj, 21))
  end)

  it("rejects a non-callable with a message naming lasync.run", function()
    assert.matches("lasync.run", errmsg(lasync.run, 42))
    assert.matches("lasync.run", errmsg(lasync.run))
  end)

  it("re-raises the main task's string error, with its position", function()
    local msg = errmsg(lasync.run, function()
      lasync.sleep(0)
      error("boom in main")
    end)
    assert.matches("run_spec.lua:%d+: boom in main", msg)
  end)

  it("re-raises the main task's table error as the same table", function()
    local e = {code = 7}
    local ok, got = pcall(lasync.run, function()
      lasync.sleep(0)
      error(e)
    end)
    assert.is_false(ok)
    assert.equals(e, got)
    assert.equals(7, got.code)
  end)

  it("re-raises the error of a task the main task awaited", function()
    local _, e = errmsg(lasync.run, function()
      local t = lasync.spawn(function()
        lasync.sleep(0)
        error({tag = "child"})
      end)
      return t:await()
    end)
    assert.equals("child", e.tag)
  end)

  it("raises CancelledError, with its message, when the main task is cancelled", function()
    local ok, e = pcall(lasync.run, function()
      local me = lasync.current_task()
      lasync.get_loop():call_soon(function() me:cancel("from outside") end)
      lasync.sleep(1000)
    end)
    assert.is_false(ok)
    assert.is_true(lasync.is_cancelled(e))
    assert.equals("from outside", e.message)
  end)

  it("runs the main task in a coroutine of its own", function()
    local outer = coroutine.running()
    local inner, ismain = lasync.run(function() return coroutine.running() end)
    assert.are_not.equal(outer, inner)
    assert.is_false(ismain)
  end)

  it("refuses a nested run with a clear error, and the outer run goes on", function()
    local msg, after = lasync.run(function()
      local ok, e = pcall(lasync.run, function() return "inner" end)
      assert.is_false(ok)
      lasync.sleep(0)
      return tostring(e), "outer still running"
    end)
    assert.matches("lasync.run", msg)
    assert.matches("already running", msg)
    assert.equals("outer still running", after)
  end)

  it("refuses a nested run from a callback too", function()
    local msg = lasync.run(function()
      local f = lasync.future()
      lasync.get_loop():call_soon(function()
        local ok, e = pcall(lasync.run, function() end)
        f:set_result(ok, tostring(e))
      end)
      local ok, e = f:await()
      assert.is_false(ok)
      return e
    end)
    assert.matches("lasync.run", msg)
  end)

  it("can run again after a run finished, and after a run failed", function()
    assert.equals(1, lasync.run(function() return 1 end))
    pcall(lasync.run, function() error("x") end)
    assert.equals(2, lasync.run(function() lasync.sleep(0) return 2 end))
  end)

  it("cancels and finishes leftover tasks: their pcall handlers and <close> variables run", function()
    local log = {}
    lasync.run(function()
      lasync.spawn(function()
        local _ <close> = setmetatable({}, {__close = function() log[#log + 1] = "closed" end})
        local ok, e = pcall(lasync.sleep, 1000)
        log[#log + 1] = (not ok and lasync.is_cancelled(e)) and "cancelled" or "not cancelled"
        error(e, 0)
      end)
      lasync.sleep(0) -- let it start
      return "main done"
    end)
    assert.same({"cancelled", "closed"}, log)
  end)

  it("starts a task spawned just before the main task returns (it is never awaited)", function()
    -- SPEC 1.1: the first step is scheduled with call_soon before the main task finishes, so it
    -- runs (up to its first suspension) before the run stops; then it is cancelled there.
    local log = {}
    lasync.run(function()
      lasync.spawn(function()
        log[#log + 1] = "started"
        local ok, e = pcall(lasync.sleep, 1000)
        log[#log + 1] = lasync.is_cancelled(e) and "cancelled" or "?"
        error(e, 0)
      end)
    end)
    assert.same({"started", "cancelled"}, log)
  end)

  it("lets cleanup code of a cancelled leftover task await", function()
    local log = {}
    lasync.run(function()
      lasync.spawn(function()
        local ok, e = pcall(lasync.sleep, 1000)
        lasync.sleep(0) -- cleanup that waits
        local f = lasync.future()
        lasync.get_loop():call_soon(function() f:set_result("cleanup value") end)
        log[#log + 1] = f:await()
        error(e, 0)
      end)
      lasync.sleep(0)
    end)
    assert.same({"cleanup value"}, log)
  end)

  it("raises a deadlock error when the main task waits on something nothing can complete", function()
    local msg = errmsg(lasync.run, function()
      lasync.future():await()
    end)
    assert.matches("deadlock", msg)
    assert.matches("run_spec.lua:%d+", msg)
  end)

  it("gives each run's loop the default settings, whatever an earlier run set", function()
    lasync.run(function()
      local loop = lasync.get_loop()
      loop.slow_callback_duration = 0.01
      loop.shutdown_timeout = 0
    end)
    local slow, shutdown = lasync.run(function()
      local loop = lasync.get_loop()
      return loop.slow_callback_duration, loop.shutdown_timeout
    end)
    assert.equals(0.1, slow)
    assert.equals(5, shutdown)
  end)

  it("a deadlock inside a Queue, Event, Lock or gather names the caller's line, not lasync's", function()
    local waits = {
      function() lasync.Queue():get() end,
      function() lasync.Event():wait() end,
      function() local l = lasync.Lock(); l:acquire(); l:acquire() end,
      function() lasync.gather(function() lasync.future():await() end) end,
    }
    for _, wait in ipairs(waits) do
      local line = debug.getinfo(wait, "S").linedefined
      local msg = errmsg(lasync.run, wait)
      assert.matches("deadlock", msg)
      assert.matches("waits at [^ ]*run_spec.lua:" .. line .. " ", msg)
    end
  end)

  it("numbers tasks Task-N from a process-wide counter, increasing across runs", function()
    local n1, n2 = lasync.run(function()
      return lasync.current_task():get_name(), lasync.spawn(function() end):get_name()
    end)
    local n3 = lasync.run(function() return lasync.current_task():get_name() end)
    local a, b, c = tonumber(n1:match("^Task%-(%d+)$")), tonumber(n2:match("^Task%-(%d+)$")),
      tonumber(n3:match("^Task%-(%d+)$"))
    assert.is_number(a)
    assert.equals(a + 1, b)
    assert.is_true(c > b)
  end)
end)

describe("lasync.get_loop", function()
  it("raises outside a loop, naming the call", function()
    assert.matches("lasync.get_loop", errmsg(lasync.get_loop))
  end)

  it("returns the same running loop in tasks and callbacks", async(function()
    local loop = lasync.get_loop()
    local f = lasync.future()
    loop:call_soon(function() f:set_result(lasync.get_loop()) end)
    assert.equals(loop, f:await())
    assert.equals(loop, lasync.spawn(lasync.get_loop):await())
    assert.is_true(loop:is_running())
  end))

  it("gives a loop that refuses scheduling once its run is over", function()
    local loop = lasync.run(function() return lasync.get_loop() end)
    local msg = errmsg(loop.call_soon, loop, function() end)
    assert.matches("call_soon", msg)
    assert.matches("closed", msg)
    assert.has_error(function() loop:call_later(0, function() end) end)
  end)

  it("is a fresh loop for each run", function()
    local a = lasync.run(lasync.get_loop)
    local b = lasync.run(lasync.get_loop)
    assert.are_not.equal(a, b)
  end)
end)

describe("lasync.current_task", function()
  it("is nil outside any loop", function()
    assert.is_nil(lasync.current_task())
  end)

  it("is nil inside a callback and the task inside a task", async(function()
    local f = lasync.future()
    lasync.get_loop():call_soon(function() f:set_result(lasync.current_task() == nil) end)
    assert.is_true(f:await())
    local t
    t = lasync.spawn(function() return lasync.current_task() end)
    assert.equals(t, t:await())
  end))
end)

-- ------------------------------------------------------------------------------ the runner

local child = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "child_helper.lua")
local script, runner, RUNNER = child.script, child.runner, child.RUNNER

describe("lasync.run shutdown", function()
  it("returns at once when leftover tasks wait on what nothing can complete", function()
    -- They are cancelled; nothing can wake one that ignores it, so run must not sit out
    -- shutdown_timeout (a generous bound: 30 s timeout, 10 s allowed).
    local t0 = os.time()
    lasync.run(function()
      lasync.get_loop().shutdown_timeout = 30
      lasync.spawn(function()
        while true do pcall(lasync.await, lasync.future()) end
      end)
      lasync.sleep(0)
    end)
    assert.is_true(os.time() - t0 < 10)
  end)

  it("cancels at the end even a leftover task that caught an earlier cancellation", function()
    local t0, reports, cleaned = os.time(), {}, false
    lasync.run(function()
      local loop = lasync.get_loop()
      loop.shutdown_timeout = 30
      loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx.message end)
      local t = lasync.spawn(function()
        pcall(lasync.sleep, 10)  -- caught the first cancellation and went on
        local ok = pcall(lasync.sleep, 30)
        cleaned = not ok
      end)
      lasync.sleep(0)
      t:cancel()
      lasync.sleep(0.01)
    end)
    assert.is_true(os.time() - t0 < 10)
    assert.is_true(cleaned)
    assert.same({}, reports)
  end)

  it("waits for a leftover task that ignores cancellation only up to shutdown_timeout", function()
    local t0, reports = os.time(), {}
    lasync.run(function()
      local loop = lasync.get_loop()
      loop.shutdown_timeout = 1
      loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx.message end)
      lasync.spawn(function()
        while true do pcall(lasync.sleep, 0.05) end
      end)
      lasync.sleep(0)
    end)
    assert.is_true(os.time() - t0 < 10)
    assert.matches("destroyed but it is pending", table.concat(reports, "\n"))
  end)
end)

describe("the lasync runner", function()
  setup(function()
    local fh = io.open(RUNNER)
    assert(fh, "runner not built at " .. RUNNER)
    fh:close()
  end)
  teardown(child.cleanup)

  it("reads the script from stdin when it is -", function()
    local p = script("stdin.lua", [[
local lasync = require "lasync"
lasync.sleep(0)
print("from stdin", ...)
]])
    local code, out = child.sh(("%s < '%s'"):format(
      ("env LUA_CPATH='%s' LUA_PATH='%s' '%s' - x y"):format(package.cpath, package.path, RUNNER), p))
    assert.equals(0, code)
    assert.equals("from stdin\tx\ty\n", out)
  end)

  it("runs the script as the main task, with top-level await, arg and ...", function()
    local p = script("ok.lua", [[
local lasync = require "lasync"
local t = lasync.current_task()
io.write("task ", tostring(t ~= nil), "\n")
local order = {}
lasync.spawn(function() order[#order + 1] = "spawned" end)
lasync.sleep(0.01)
order[#order + 1] = "main"
io.write(table.concat(order, ","), "\n")
io.write("n ", select("#", ...), " ", table.concat({...}, "|"), "\n")
io.write("arg ", arg[1], " ", arg[2], " ", #arg, "\n")
io.write("arg0 ", tostring(arg[0]:match("ok%.lua$") ~= nil), "\n")
io.write("argm1 ", tostring(arg[-1] ~= nil), "\n")
]])
    local code, out, err = runner(p, "a 'b c'")
    assert.equals("", err)
    assert.equals(0, code)
    assert.equals("task true\nspawned,main\nn 2 a|b c\narg a b c 2\narg0 true\nargm1 true\n", out)
  end)

  it("names the main task Task-1 in a fresh process (and counts on from there)", function()
    local p = script("names.lua", [[
local lasync = require "lasync"
io.write(lasync.current_task():get_name(), " ", lasync.spawn(function() end):get_name(), "\n")
]])
    local code, out, err = runner(p)
    assert.equals("", err)
    assert.equals(0, code)
    assert.equals("Task-1 Task-2\n", out)
  end)

  it("exits 1 with the message and a traceback naming the script on error", function()
    local p = script("fail.lua", [[
local lasync = require "lasync"
local function deep_failure()
  lasync.sleep(0)
  error("kaboom")
end
deep_failure()
]])
    local code, out, err = runner(p)
    assert.equals(1, code)
    assert.equals("", out)
    assert.matches("kaboom", err)
    assert.matches("fail%.lua:4", err)
    assert.matches("traceback", err)
    assert.matches("deep_failure", err)
  end)

  it("exits 1 with the traceback of the task where a table error was raised", function()
    local p = script("chain.lua", [[
local lasync = require "lasync"
local function raiser()
  lasync.sleep(0)
  error(lasync.TimeoutError("too late"))
end
local t = lasync.spawn(raiser)
t:await()
]])
    local code, out, err = runner(p)
    assert.equals(1, code)
    assert.matches("too late", err)
    assert.matches("chain%.lua:4", err)
    assert.matches("awaited by Task%-%d+", err)
  end)

  it("exits 1 for an error object whose __tostring fails, without crashing", function()
    local p = script("badtostring.lua", [[
error(setmetatable({}, {__tostring = function() error("no string for you") end}))
]])
    local code, _, err = runner(p)
    assert.equals(1, code)
    assert.matches("lasync", err)
  end)

  it("names a non-string error object as lua5.4 does, with a traceback of the script only", function()
    for _, case in ipairs({{"{}", "table"}, {"nil", "nil"}, {"false", "boolean"}}) do
      local p = script("nonstring.lua", "local function f() error(" .. case[1] .. ") end\nf()\n")
      local code, out, err = runner(p)
      assert.equals(1, code)
      assert.equals("", out)
      assert.equals("lasync: (error object is a " .. case[2] .. " value)\n", err:match("^[^\n]*\n"))
      assert.matches("nonstring%.lua:1: in local 'f'", err)
      -- the runner's own frames (its xpcall around the script) are not the user's business
      assert.is_nil(err:find("xpcall", 1, true), err)
      assert.is_nil(err:find("lasync:%d"), err)
    end
  end)

  it("gives the script arg and ... as lua5.4 does", function()
    local p = script("args.lua", [[
local t = {}
for i = -3, #arg do t[#t + 1] = i .. "=" .. tostring(i == -1 and "<interpreter>" or arg[i]) end
t[#t + 1] = "#=" .. select("#", ...)
for i = 1, select("#", ...) do t[#t + 1] = "[" .. select(i, ...) .. "]" end
t[#t + 1] = "-1 is " .. tostring(arg[-1]:match("[^/]*$"))
io.write(table.concat(t, " "), "\n")
]])
    local args = "a '' 'b c' -x --"
    local code, out, err = runner(p, args)
    assert.equals("", err)
    assert.equals(0, code)
    local code2, expected = child.sh(("env LUA_CPATH='%s' LUA_PATH='%s' lua5.4 '%s' %s")
      :format(package.cpath, package.path, p, args))
    assert.equals(0, code2)
    assert.equals(expected:gsub("%-1 is lua5%.4", "-1 is lasync"), out)
  end)

  it("exits 1 on a syntax error in the script", function()
    local p = script("syntax.lua", "local = = 1\n")
    local code, _, err = runner(p)
    assert.equals(1, code)
    assert.matches("syntax%.lua", err)
  end)

  it("exits 0 and leaves nothing behind when the script spawns and returns", function()
    local p = script("leftover.lua", [[
local lasync = require "lasync"
lasync.spawn(function()
  local ok, e = pcall(lasync.sleep, 1000)
  io.write("cancelled ", tostring(lasync.is_cancelled(e)), "\n")
  error(e, 0)
end)
lasync.sleep(0)
io.write("main returns\n")
]])
    local code, out, err = runner(p)
    assert.equals(0, code)
    assert.equals("main returns\ncancelled true\n", out)
    assert.equals("", err)
  end)
end)
