-- Tasks: lasync.spawn, Task methods, names, lifetime (SPEC 1.1, 2 "tasks and futures").
local lasync = require "lasync"
local async = require "lasync.busted"

local function errmsg(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(e), e
end

local function taskno(t)
  local n = t:get_name():match("^Task%-(%d+)$")
  return assert(tonumber(n), "not a Task-N name: " .. t:get_name())
end

describe("lasync.spawn", function()
  it("returns a pending Task and does not run it inline", async(function()
    local ran = false
    local t = lasync.spawn(function() ran = true end)
    assert.is_false(ran)
    assert.is_false(t:done())
    assert.matches("^Task<Task%-%d+ pending>$", tostring(t))
    lasync.sleep(0)
    assert.is_true(ran)
    assert.is_true(t:done())
    assert.matches("^Task<Task%-%d+ done>$", tostring(t))
  end))

  it("starts a task when the loop next runs, even if nobody ever awaits it", async(function()
    local log = {}
    lasync.spawn(function() log[#log + 1] = "a" end)
    lasync.spawn(function() log[#log + 1] = "b" end)
    log[#log + 1] = "spawner"
    local f = lasync.future()
    lasync.get_loop():call_soon(function() f:set_result() end)
    f:await() -- any suspension gives the loop control
    assert.same({"spawner", "a", "b"}, log)
  end))

  it("starts tasks in spawn order, interleaved with call_soon callbacks in FIFO order", async(function()
    local log = {}
    local loop = lasync.get_loop()
    lasync.spawn(function() log[#log + 1] = "t1" end)
    loop:call_soon(function() log[#log + 1] = "cb1" end)
    lasync.spawn(function() log[#log + 1] = "t2" end)
    loop:call_soon(function() log[#log + 1] = "cb2" end)
    lasync.sleep(0)
    assert.same({"t1", "cb1", "t2", "cb2"}, log)
  end))

  it("passes arguments, nils included, and keeps all results, nils included", async(function()
    local t = lasync.spawn(function(...)
      lasync.sleep(0)
      return select("#", ...), ...
    end, nil, 2, nil)
    local r = table.pack(t:await())
    assert.same({n = 4, 3, nil, 2, nil}, r)
    assert.same({n = 4, 3, nil, 2, nil}, table.pack(t:result()))
    local t2 = lasync.spawn(function() return nil, nil end)
    assert.equals(2, select("#", t2:await()))
    local t3 = lasync.spawn(function() end)
    assert.equals(0, select("#", t3:await()))
  end))

  it("keeps thousands of results", async(function()
    local big = {}
    for i = 1, 5000 do big[i] = i end
    local t = lasync.spawn(function() lasync.sleep(0) return table.unpack(big) end)
    local r = {t:await()}
    assert.equals(5000, #r)
    assert.equals(5000, r[5000])
    assert.equals(5000, select("#", t:result()))
  end))

  it("accepts a callable table", async(function()
    local obj = setmetatable({k = 5}, {__call = function(self, x) lasync.sleep(0) return self.k + x end})
    assert.equals(8, lasync.spawn(obj, 3):await())
  end))

  it("rejects a non-callable, naming lasync.spawn", async(function()
    assert.matches("lasync.spawn", errmsg(lasync.spawn, nil))
    assert.matches("lasync.spawn", errmsg(lasync.spawn, "not a function"))
  end))

  it("works from a call_soon callback", async(function()
    local f = lasync.future()
    lasync.get_loop():call_soon(function()
      f:set_result(lasync.spawn(function() lasync.sleep(0) return "from cb" end))
    end)
    local t = f:await()
    assert.equals("from cb", t:await())
  end))

  it("runs many tasks concurrently, interleaving at each sleep(0)", async(function()
    local log = {}
    local function worker(name)
      for i = 1, 3 do
        log[#log + 1] = name .. i
        lasync.sleep(0)
      end
    end
    local a, b = lasync.spawn(worker, "a"), lasync.spawn(worker, "b")
    a:await()
    b:await()
    assert.same({"a1", "b1", "a2", "b2", "a3", "b3"}, log)
  end))
end)

describe("a Task", function()
  it("is a Future: done/cancelled/result/error/add_done_callback/await", async(function()
    local t = lasync.spawn(function() lasync.sleep(0) return "v" end)
    assert.is_false(t:done())
    assert.is_false(t:cancelled())
    local ok, e = pcall(t.result, t)
    assert.is_false(ok)
    assert.equals(lasync.InvalidStateError, getmetatable(e))
    local cbarg
    t:add_done_callback(function(x) cbarg = x end)
    assert.equals("v", t:await())
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    assert.is_nil(t:error())
    assert.equals("v", t:result())
    lasync.sleep(0)
    assert.equals(t, cbarg)
  end))

  it("refuses set_result and set_error, naming the call", async(function()
    local t = lasync.spawn(function() lasync.sleep(0) end)
    assert.matches("set_result", errmsg(t.set_result, t, 1))
    assert.matches("set_error", errmsg(t.set_error, t, "e"))
    t:await()
    assert.matches("set_result", errmsg(t.set_result, t, 1))
  end))

  it("gives its result to every awaiter, before and after it finished", async(function()
    local t = lasync.spawn(function() lasync.sleep(0) return 1, 2 end)
    local w1 = lasync.spawn(function() return t:await() end)
    local w2 = lasync.spawn(function() return lasync.await(t) end)
    assert.same({1, 2}, {w1:await()})
    assert.same({1, 2}, {w2:await()})
    assert.same({1, 2}, {t:await()})
    assert.same({1, 2}, {t:await()})
  end))

  it("records its error, raised by await and result() and returned by error()", async(function()
    local t = lasync.spawn(function() lasync.sleep(0) error({tag = "t"}) end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.equals("t", e.tag)
    assert.equals("t", t:error().tag)
    local ok2, e2 = pcall(t.result, t)
    assert.is_false(ok2)
    assert.equals(e, e2)
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
  end))
end)

describe("task names", function()
  it("are Task-N with N increasing by spawn order", async(function()
    local main = lasync.spawn(function() end)
    local a, b, c = lasync.spawn(function() end), lasync.spawn(function() end), lasync.spawn(function() end)
    assert.is_true(taskno(a) > taskno(main))
    assert.equals(taskno(a) + 1, taskno(b))
    assert.equals(taskno(b) + 1, taskno(c))
    lasync.sleep(0)
  end))

  it("can be set, and show in tostring", async(function()
    local t = lasync.spawn(function()
      lasync.sleep(0)
      return lasync.current_task():get_name()
    end)
    local old = t:get_name()
    t:set_name("worker")
    assert.equals("worker", t:get_name())
    assert.matches("worker", tostring(t))
    assert.equals("worker", t:await())
    assert.are_not.equal(old, t:get_name())
    t:set_name(12)
    assert.equals("12", t:get_name())
    assert.has_error(function() t:set_name() end, "Task.set_name: a name is expected")
  end))
end)

describe("task lifetime", function()
  it("the loop holds tasks strongly: an unreferenced task finishes across full collections", async(function()
    local finished = 0
    for _ = 1, 50 do
      lasync.spawn(function()
        for _ = 1, 3 do
          collectgarbage("collect")
          lasync.sleep(0)
        end
        local f = lasync.future()
        lasync.get_loop():call_later(0.001, function() f:set_result(1) end)
        local v = f:await()
        finished = finished + v
      end)
    end
    for _ = 1, 10 do
      collectgarbage("collect")
      collectgarbage("collect")
      lasync.sleep(0)
    end
    while finished < 50 do
      collectgarbage("collect")
      lasync.sleep(0.001)
    end
    assert.equals(50, finished)
  end))

  it("a future only C refers to (awaited by a task, completed from a timer) stays valid", async(function()
    local results = {}
    for i = 1, 20 do
      lasync.spawn(function()
        local f = lasync.future()
        -- only the timer handle's arguments and this await keep f
        lasync.get_loop():call_later(0.001 * (i % 3), f.set_result, f, i, nil, "x")
        collectgarbage("collect")
        local r = table.pack(f:await())
        results[i] = r
      end)
    end
    for _ = 1, 100 do
      collectgarbage("collect")
      lasync.sleep(0.001)
      local n = 0
      for _ in pairs(results) do n = n + 1 end
      if n == 20 then break end
    end
    for i = 1, 20 do assert.same({n = 3, i, nil, "x"}, results[i]) end
  end))

  it("a future referenced only by a timer and a done callback completes and reports its values", async(function()
    local got = {}
    for i = 1, 20 do
      local f = lasync.future()
      f:add_done_callback(function(fut) got[#got + 1] = {fut:result()} end)
      lasync.get_loop():call_later(0.001, f.set_result, f, i, "v")
    end
    local deadline = lasync.get_loop():time() + 4
    while #got < 20 and lasync.get_loop():time() < deadline do
      collectgarbage("collect")
      lasync.sleep(0.001)
    end
    table.sort(got, function(a, b) return a[1] < b[1] end)
    assert.equals(20, #got)
    for i = 1, 20 do assert.same({i, "v"}, got[i]) end
  end))

  it("a done callback's future stays valid when Lua dropped every reference to it", async(function()
    local got = {}
    for i = 1, 20 do
      local f = lasync.future()
      f:add_done_callback(function(fut)
        collectgarbage("collect")
        got[#got + 1] = fut:result()
      end)
      f:set_result(i)
    end
    collectgarbage("collect")
    collectgarbage("collect")
    lasync.sleep(0)
    table.sort(got)
    assert.equals(20, #got)
    for i = 1, 20 do assert.equals(i, got[i]) end
  end))

  it("an unreferenced task's done callback gets the task and its result", async(function()
    local got
    lasync.spawn(function() lasync.sleep(0) return "res" end):add_done_callback(function(t)
      got = {t:done(), t:result()}
    end)
    for _ = 1, 5 do
      collectgarbage("collect")
      lasync.sleep(0)
    end
    assert.same({true, "res"}, got)
  end))

  it("a finished, unreferenced task with a result is collected without any report", async(function()
    local weak = setmetatable({}, {__mode = "v"})
    weak[1] = lasync.spawn(function() return 1 end)
    lasync.sleep(0)
    lasync.sleep(0)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_nil(weak[1])
  end))
end)
