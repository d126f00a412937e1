-- review_spec.lua: regressions found in review (lifetime, cancellation, error paths, README).
-- Each `it` pins one behaviour; the ones that can crash or hang the process run in a child
-- process (lua5.4 or the runner) under a time limit, so a failure is a failure, not a hang.
local lasync = require "lasync"
local async = require "lasync.busted"

local child = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "child_helper.lua")
local script, lua_child, run_script = child.script, child.lua_child, child.run_script

local function catch(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return e
end

teardown(child.cleanup)

-- ------------------------------------------------------------------------ lifetime and GC

describe("review: lifetime", function()
  it("awaiting a task that an earlier run left pending raises instead of crashing", function()
    local code, out, err = lua_child("stale_task.lua", [[
local lasync = require "lasync"
local stuck
lasync.run(function()
  lasync.get_loop():set_exception_handler(function() end)
  stuck = lasync.spawn(function()
    pcall(lasync.await, lasync.future())   -- swallows the run's cancellation
    lasync.await(lasync.future())          -- and waits for ever: left pending at close
  end)
  lasync.sleep(0)
end)
assert(not stuck:done())
local ok, e = pcall(lasync.run, function() return pcall(lasync.await, stuck) end)
print("survived", ok, e)
]])
    assert.equals(0, code, "exit code " .. code .. "\n" .. err)
    assert.matches("survived", out)
  end)

  it("keeps futures, tasks and callbacks valid through collections in awkward places",
    async(function()
      local log = {}
      local t = lasync.spawn(function() lasync.sleep(0); return "t" end)
      t:add_done_callback(function(f) collectgarbage(); log[#log + 1] = f:result() end)
      t = nil
      collectgarbage()
      local f = lasync.future()
      f:add_done_callback(function(x) collectgarbage(); log[#log + 1] = x:result() end)
      lasync.get_loop():call_soon(function()
        f:set_result("f"); f = nil; collectgarbage(); collectgarbage()
      end)
      local w = lasync.spawn(function()
        local c <close> = setmetatable({}, {__close = function() collectgarbage() end})
        local g = lasync.future()
        lasync.get_loop():call_soon(function() g:set_result("g"); collectgarbage() end)
        return g:await()
      end)
      collectgarbage()
      local v = w:await()
      log[#log + 1] = v
      lasync.sleep(0)
      table.sort(log)
      assert.same({"f", "g", "t"}, log)
    end))

  it("runs many times in one state, and objects of an earlier run stay usable", function()
    local saved, fut
    for i = 1, 50 do
      local r = lasync.run(function()
        if saved then
          assert.is_true(saved:done())
          assert.is_true(lasync.is_cancelled(catch(saved.await, saved)))
          assert.equals("v", fut:await())
          local hit = false
          fut:add_done_callback(function() hit = true end)
          lasync.sleep(0)
          assert.is_true(hit)
        end
        saved = lasync.spawn(function() lasync.sleep(10) end)
        fut = lasync.future()
        fut:set_result("v")
        collectgarbage()
        return i
      end)
      assert.equals(i, r)
    end
  end)
end)

-- ----------------------------------------------------------------------------- cancellation

describe("review: cancellation", function()
  it("cancel(msg) reaches a task that is awaiting another task", async(function()
    local t = lasync.spawn(function()
      local child = lasync.spawn(lasync.sleep, 1)
      return child:await()
    end)
    lasync.sleep(0.01)
    t:cancel("why")
    local e = catch(t.await, t)
    assert.is_true(lasync.is_cancelled(e))
    assert.equals("why", e.message)
  end))

  it("cancel(msg) reaches the task at every other kind of await", async(function()
    local aw = setmetatable({}, {__await = function() return lasync.sleep(1) end})
    local bodies = {
      sleep = function() lasync.sleep(1) end,
      sleep0 = function() while true do lasync.sleep(0) end end,
      future = function() lasync.future():await() end,
      __await = function() lasync.await(aw) end,
      pcall = function() local ok, e = pcall(lasync.sleep, 1); error(e, 0) end,
      event = function() lasync.Event():wait() end,
      gather = function() lasync.gather(function() lasync.sleep(1) end) end,
    }
    for name, body in pairs(bodies) do
      local t = lasync.spawn(body)
      lasync.sleep(0.001)
      t:cancel("why")
      local e = catch(t.await, t)
      assert.is_true(lasync.is_cancelled(e), name)
      assert.equals("why", e.message, name)
    end
  end))

  it("a CancelledError raised in a <close> handler after an error says 'cancelled', not the error's traceback",
    async(function()
      local t = lasync.spawn(function()
        local c <close> = setmetatable({}, {__close = function() lasync.sleep(1) end})
        error("boom")
      end)
      lasync.sleep(0.01)  -- t is unwinding from "boom", asleep in its __close
      t:cancel()
      local e = catch(t.await, t)
      assert.is_true(lasync.is_cancelled(e))
      assert.equals("cancelled", e.message)
    end))

  it("cancel(msg) does not replace the traceback reported for a task's error", async({leaks = false}, function()
    local reports = {}
    local loop = lasync.get_loop()
    local prev = loop:get_exception_handler()
    loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
    local t = lasync.spawn(function()
      local c <close> = setmetatable({}, {__close = function() pcall(lasync.sleep, 1) end})
      error({code = 1})
    end)
    lasync.sleep(0.01)
    t:cancel("mymsg")                 -- reaches the __close's sleep, which swallows it
    lasync.sleep(0.01)
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    t = nil
    collectgarbage(); collectgarbage()
    loop:set_exception_handler(prev)
    assert.equals(1, #reports)
    assert.not_equals("mymsg", reports[1].traceback)
    assert.matches("stack traceback", reports[1].traceback)
  end))

  it("a cancelled task that polls with bare coroutine.yield() does not hang lasync.run", function()
    child.limit = 5
    local code, out, err = run_script("yield_poller.lua", [[
local lasync = require "lasync"
lasync.spawn(function() while true do coroutine.yield() end end)
lasync.sleep(0)
print("main done")
]])
    child.limit = 20
    assert.not_equals(124, code, "the runner hung after the main task returned")
    assert.matches("main done", out)
  end)

  it("an await that cannot yield (table.sort comparator) fails cleanly, naming the call, and leaves no stale wakeup",
    async(function()
      local F, G = lasync.future(), lasync.future()
      local ok, e = pcall(table.sort, {3, 1, 2}, function(a, b) F:await(); return a < b end)
      assert.is_false(ok)
      assert.matches("await", tostring(e))      -- SPEC: misuse raises a message naming the call
      local loop = lasync.get_loop()
      loop:call_later(0.01, function() F:set_result("F") end)
      loop:call_later(0.03, function() G:set_result("G") end)
      assert.equals("G", G:await())              -- not woken by F while G is pending
    end))

  it("cancel during a same-iteration hand-off loses no queue item", async(function()
    for _ = 1, 20 do
      local q = lasync.Queue()
      local got
      local t = lasync.spawn(function() got = q:get(); lasync.sleep(1) end)
      lasync.sleep(0)
      q:put("item")
      t:cancel()
      local e = catch(t.await, t)
      assert.is_true(lasync.is_cancelled(e))
      assert.equals("item", got or q:get_nowait())
    end
  end))
end)

-- -------------------------------------------------------------------------------- errors

describe("review: error paths", function()
  it("a callback's error object whose __index raises is reported, and the run goes on", function()
    local code, out, err = lua_child("strict_error.lua", [[
local lasync = require "lasync"
local Strict = {
  __index = function(_, k) error("no field " .. tostring(k), 2) end,
  __tostring = function(e) return "StrictError(" .. rawget(e, "msg") .. ")" end,
}
print(pcall(lasync.run, function()
  local loop = lasync.get_loop()
  loop:call_soon(function() error(setmetatable({msg = "cb"}, Strict)) end)
  local f = lasync.future()
  f:add_done_callback(function() error(setmetatable({msg = "done cb"}, Strict)) end)
  f:set_result(1)
  lasync.sleep(0.01)
  return "main result"
end))
]])
    assert.equals(0, code, err)
    assert.matches("true\tmain result", out)
    assert.matches("StrictError%(cb%)", err)
    assert.matches("StrictError%(done cb%)", err)
  end)

  it("task_group raises when a child fails with error() (a nil error)", async(function()
    local sibling_finished = false
    local ok = pcall(lasync.task_group, function(tg)
      tg:spawn(function() error() end)
      tg:spawn(function() lasync.sleep(0.05); sibling_finished = true end)
    end)
    assert.is_false(ok)
    assert.is_false(sibling_finished)
  end))

  it("gather cancels the others when a child fails with error() (a nil error)", async(function()
    local other
    local ok = pcall(lasync.gather, function() error() end, function()
      other = lasync.current_task()
      lasync.sleep(1)
    end)
    assert.is_false(ok)
    assert.is_true(other:cancelled())
  end))

  it("wait(return_when = 'error') returns at a child failing with error() (a nil error)",
    async(function()
      local done, pending = lasync.wait({function() error() end, function() lasync.sleep(1) end},
        {return_when = "error"})
      assert.equals(1, #done)
      assert.equals(1, #pending)
      pending[1]:cancel()
      lasync.sleep(0)
    end))

  it("errors that are false, numbers and tables with metatables reach the awaiter unchanged",
    async(function()
      local mt = {__tostring = function() return "custom" end}
      local tab = setmetatable({}, mt)
      for _, v in ipairs({false, 42, tab}) do
        local t = lasync.spawn(function() error(v, 0) end)
        local ok, e = pcall(t.await, t)
        assert.is_false(ok)
        assert.equals(v, e)
      end
    end))

  it("debug mode reports a task that swallowed the CancelledError of an await, not only of sleep",
    async({debug = true, leaks = false}, function()
      local loop = lasync.get_loop()
      local prev = loop:get_exception_handler()
      local reports = {}
      loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx.message end)
      for _, kind in ipairs({"future", "task", "event"}) do
        local t = lasync.spawn(function()
          if kind == "future" then pcall(lasync.await, lasync.future())
          elseif kind == "task" then pcall(lasync.await, lasync.spawn(lasync.sleep, 1))
          else local ev = lasync.Event(); pcall(ev.wait, ev) end
          return "swallowed"
        end)
        lasync.sleep(0.001)
        t:cancel()
        assert.equals("swallowed", t:await())
      end
      loop:set_exception_handler(prev)
      local n = 0
      for _, m in ipairs(reports) do if m:match("caught CancelledError") then n = n + 1 end end
      assert.equals(3, n)
    end))
end)

-- -------------------------------------------------------------------------------- runner

describe("review: the runner", function()
  it("prints the traceback of the child task that raised a string error (README: 'the traceback of the task that raised it')",
    function()
      local code, out, err = run_script("child_err.lua", [[
local lasync = require "lasync"
local function deep_in_child() error("child failed") end
local t = lasync.spawn(function() deep_in_child() end)
t:await()
]])
      assert.equals(1, code)
      assert.matches("child failed", err)
      assert.matches("deep_in_child", err)
    end)

  it("exits 1 for nil, false and number errors, naming them as lua5.4 does", function()
    local named = {["nil"] = "(error object is a nil value)",
                   ["false"] = "(error object is a boolean value)", ["42"] = "42"}
    for v, name in pairs(named) do
      local code, _, err = run_script("e.lua", "error(" .. v .. ")\n")
      assert.equals(1, code)
      assert.matches("lasync: " .. name .. "\n", err, 1, true)
    end
  end)

  it("exits with the os.exit code when a task calls os.exit", function()
    local code = run_script("exit.lua", [[
local lasync = require "lasync"
lasync.spawn(function() lasync.sleep(0); os.exit(4, true) end)
lasync.sleep(1)
]])
    assert.equals(4, code)
  end)
end)

-- -------------------------------------------------------------------------------- README

describe("review: README snippets", function()
  -- Every ```lua block of README.md that is a complete program runs and exits 0 (the busted
  -- example and the runner example are skipped: they are not stand-alone lua5.4 programs).
  it("run as lua5.4 programs", function()
    local fh = io.open("README.md")
    if not fh then return pending("README.md not found from " .. os.getenv("PWD")) end
    local text = fh:read("a")
    fh:close()
    local n = 0
    for block in text:gmatch("```lua\n(.-)```") do
      n = n + 1
      if not block:match("describe%(") and not block:match("%.%.%.%) end%)%)")
          and not block:match("hello%.lua") then
        if not block:match("require \"lasync\"") then block = 'local lasync = require "lasync"\n' .. block end
        local code, out, err = lua_child("readme" .. n .. ".lua", block)
        assert.equals(0, code, "README block " .. n .. " failed:\n" .. block .. "\n" .. err)
      end
    end
    assert.is_true(n > 0)
  end)
end)
