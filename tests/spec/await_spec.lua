-- await: when it suspends and when it does not, and where it works (SPEC 1.2, 1.3, 2 await).
local lasync = require "lasync"
local async = require "lasync.busted"

local iteration_counter = async.iteration_counter

-- A future completed by a callback on the next iteration.
local function soon(...)
  local f = lasync.future()
  lasync.get_loop():call_soon(f.set_result, f, ...)
  return f
end

describe("awaiting a done future", function()
  it("returns its values at once, without a loop iteration", async(function()
    local ran = false
    lasync.get_loop():call_soon(function() ran = true end)
    local f = lasync.future()
    f:set_result(1, nil, 3)
    local r = table.pack(f:await())
    assert.is_false(ran) -- the callback scheduled before the await has NOT run
    assert.same({n = 3, 1, nil, 3}, r)
    r = table.pack(lasync.await(f))
    assert.is_false(ran)
    assert.same({n = 3, 1, nil, 3}, r)
    lasync.sleep(0)
    assert.is_true(ran)
  end))

  it("raises a failed future's error at once, without a loop iteration", async(function()
    local ran = false
    lasync.get_loop():call_soon(function() ran = true end)
    local f = lasync.future()
    f:set_error("bad")
    local ok, e = pcall(f.await, f)
    assert.is_false(ok)
    assert.equals("bad", e)
    assert.is_false(ran)
    local g = lasync.future()
    g:cancel()
    ok, e = pcall(g.await, g)
    assert.is_false(ok)
    assert.is_true(lasync.is_cancelled(e))
    assert.is_false(ran)
    lasync.sleep(0)
  end))

  it("returns a finished task's results at once, without a loop iteration", async(function()
    local t = lasync.spawn(function() return "r", nil end)
    lasync.sleep(0)
    assert.is_true(t:done())
    local ran = false
    lasync.get_loop():call_soon(function() ran = true end)
    local r = table.pack(t:await())
    assert.is_false(ran)
    assert.same({n = 2, "r", nil}, r)
    lasync.sleep(0)
  end))

  it("many awaits of done futures in a row never give the loop control", async(function()
    local c = iteration_counter()
    local f = lasync.future()
    f:set_result(1)
    local sum = 0
    for _ = 1, 1000 do sum = sum + f:await() end
    local n = c.n
    c.stop()
    assert.equals(1000, sum)
    assert.equals(0, n)
  end))
end)

describe("awaiting a pending future", function()
  it("suspends the task: callbacks ready before it run first", async(function()
    local log = {}
    local loop = lasync.get_loop()
    loop:call_soon(function() log[#log + 1] = "cb1" end)
    local f = soon("v")
    loop:call_soon(function() log[#log + 1] = "cb2" end)
    log[#log + 1] = "await"
    local v = f:await()
    log[#log + 1] = "resumed " .. v
    assert.same({"await", "cb1", "cb2", "resumed v"}, log)
  end))

  it("resumes the task through the ready queue, after the future completes", async(function()
    local log = {}
    local loop = lasync.get_loop()
    local f = lasync.future()
    loop:call_soon(function()
      f:set_result()
      log[#log + 1] = "set" -- the task does not run inline from set_result
      loop:call_soon(function() log[#log + 1] = "scheduled after set" end)
    end)
    f:await()
    log[#log + 1] = "resumed"
    lasync.sleep(0)
    assert.same({"set", "resumed", "scheduled after set"}, log)
  end))

  it("takes exactly one iteration to resume after a callback completes it", async(function()
    local c = iteration_counter()
    lasync.sleep(0) -- counter is now ahead of us in the queue
    local base = c.n
    local f = soon("x")
    assert.equals("x", f:await())
    local n = c.n - base
    c.stop()
    -- the set_result callback runs in iteration 1, the task in iteration 2 at the latest
    assert.equals(2, n)
  end))
end)

describe("await at any depth (stackful coroutines)", function()
  it("works through nested plain function calls", async(function()
    local function deep(n)
      if n == 0 then return soon("bottom"):await() end
      return deep(n - 1)
    end
    assert.equals("bottom", deep(150))
    local function deep_nontail(n)
      if n == 0 then return soon(0):await() end
      local v = deep_nontail(n - 1)
      return v + 1
    end
    assert.equals(150, deep_nontail(150))
  end))

  it("works through pcall and xpcall, for results and errors", async(function()
    local ok, v = pcall(function() return soon("through pcall"):await() end)
    assert.is_true(ok)
    assert.equals("through pcall", v)
    ok, v = pcall(lasync.sleep, 0, "direct")
    assert.same({true, "direct"}, {ok, v})
    local f = lasync.future()
    lasync.get_loop():call_soon(f.set_error, f, {tag = "caught"})
    local ok2, e = pcall(f.await, f)
    assert.is_false(ok2)
    assert.equals("caught", e.tag)
    local handled
    local ok3 = xpcall(function()
      soon():await()
      error("after await")
    end, function(m) handled = m return m end)
    assert.is_false(ok3)
    assert.matches("after await", handled)
    -- nested pcalls, awaiting at every level
    local r = {pcall(function()
      soon():await()
      return pcall(function()
        soon():await()
        return select(2, pcall(function() return soon("inner"):await() end))
      end)
    end)}
    assert.same({true, true, "inner"}, r)
  end))

  it("works in metamethods: __index, __newindex, __call, arithmetic, comparison, __concat, __len, __close",
    async(function()
    local log = {}
    local mt = {}
    mt.__index = function(_, k) return soon("idx:" .. k):await() end
    mt.__newindex = function(t, k, v) rawset(t, k, soon(v * 2):await()) end
    mt.__call = function(_, a) return soon(a + 1):await() end
    mt.__add = function(a, b) return soon(10):await() + (type(b) == "number" and b or 0) end
    mt.__unm = function() return soon(-1):await() end
    mt.__lt = function() return soon(true):await() end
    mt.__le = function() return soon(false):await() end
    mt.__eq = function() return soon(true):await() end
    mt.__concat = function(_, b) return soon("cat"):await() .. b end
    mt.__len = function() return soon(77):await() end
    mt.__close = function() log[#log + 1] = soon("closed"):await() end
    local a, b = setmetatable({}, mt), setmetatable({}, mt)
    assert.equals("idx:foo", a.foo)
    a.bar = 21
    assert.equals(42, rawget(a, "bar"))
    assert.equals(6, a(5))
    assert.equals(15, a + 5)
    assert.equals(-1, -a)
    assert.is_true(a < b)
    assert.is_false(a <= b)
    assert.is_true(a == b)
    assert.equals("cat!", a .. "!")
    assert.equals(77, #a)
    do
      local _ <close> = a
      log[#log + 1] = "body"
    end
    assert.same({"body", "closed"}, log)
  end))

  it("works in iterators: a for-in over a function that awaits", async(function()
    local loop = lasync.get_loop()
    local other = {}
    local function ticker(n)
      local i = 0
      return function()
        i = i + 1
        if i > n then return nil end
        loop:call_soon(function() other[#other + 1] = i end)
        return i, soon(i * i):await()
      end
    end
    local got = {}
    for i, sq in ticker(4) do got[#got + 1] = i .. "=" .. sq end
    assert.same({"1=1", "2=4", "3=9", "4=16"}, got)
    assert.same({1, 2, 3, 4}, other) -- the loop really ran between the iterations
  end))

  it("fails clearly (no crash) when awaiting across a C call that cannot yield (table.sort)", async(function()
    -- Lua cannot yield across these C functions; the error must be clear, not a crash.
    local ok, e = pcall(table.sort, {3, 1, 2}, function(x, y)
      soon():await()
      return x < y
    end)
    assert.is_false(ok)
    assert.matches("yield", tostring(e))
    -- the task is still usable afterwards
    assert.equals("still fine", soon("still fine"):await())
    lasync.sleep(0)
  end))
end)

describe("plain coroutines inside a task", function()
  it("a coroutine.wrap generator keeps working; its yields are not taken by the loop", async(function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do coroutine.yield(i, "x") end
      return "end"
    end)
    local got = {}
    for _ = 1, 3 do
      local a, b = gen()
      got[#got + 1] = a .. b
      soon():await() -- and the task awaits between the generator's steps
    end
    assert.same({"1x", "2x", "3x"}, got)
    assert.equals("end", gen())
  end))

  it("a generator used by a for-in inside a task, with awaits in the loop body", async(function()
    local function range(n)
      return coroutine.wrap(function()
        for i = 1, n do coroutine.yield(i) end
      end)
    end
    local sum = 0
    for i in range(10) do
      sum = sum + soon(i):await()
    end
    assert.equals(55, sum)
  end))

  it("coroutine.create/resume inside a task works, bare yields included", async(function()
    local co = coroutine.create(function(a)
      local b = coroutine.yield()
      local c = coroutine.yield(a + b)
      return c * 2
    end)
    assert.same({true}, {coroutine.resume(co, 1)})
    lasync.sleep(0)
    assert.same({true, 3}, {coroutine.resume(co, 2)})
    assert.same({true, 10}, {coroutine.resume(co, 5)})
    assert.equals("dead", coroutine.status(co))
  end))

  it("awaiting from inside such a coroutine raises a clear error", async(function()
    local f = lasync.future()
    local co = coroutine.wrap(function()
      local ok, e = pcall(f.await, f)
      coroutine.yield(ok, tostring(e))
      local ok2, e2 = pcall(lasync.sleep, 0)
      coroutine.yield(ok2, tostring(e2))
      local ok3, e3 = pcall(lasync.await, f)
      coroutine.yield(ok3, tostring(e3))
    end)
    local ok, msg = co()
    assert.is_false(ok)
    assert.matches("await", msg)
    assert.matches("coroutine", msg)
    local ok2, msg2 = co()
    assert.is_false(ok2)
    assert.matches("sleep", msg2)
    assert.matches("coroutine", msg2)
    local ok3, msg3 = co()
    assert.is_false(ok3)
    assert.matches("coroutine", msg3)
    -- the task and the future are unaffected
    f:set_result("fine")
    assert.equals("fine", f:await())
  end))

  it("awaiting a DONE future from inside a plain coroutine is just as clear an error", async(function()
    -- nothing would need to suspend, but the caller is not the task: it should still work or
    -- fail clearly; either way it must not break the task.
    local f = lasync.future()
    f:set_result(5)
    local ok, v = coroutine.wrap(function() return pcall(f.await, f) end)()
    if ok then assert.equals(5, v) else assert.matches("coroutine", tostring(v)) end
    assert.equals(5, f:await())
  end))
end)

describe("a bare coroutine.yield() in a task", function()
  it("gives up exactly one loop iteration, like sleep(0)", async(function()
    local log = {}
    local loop = lasync.get_loop()
    loop:call_soon(function()
      log[#log + 1] = "cb1"
      loop:call_soon(function() log[#log + 1] = "cb1-next" end)
    end)
    lasync.spawn(function() log[#log + 1] = "task" end)
    coroutine.yield()
    log[#log + 1] = "back"
    lasync.sleep(0)
    assert.same({"cb1", "task", "back", "cb1-next"}, log)
  end))

  it("returns no values", async(function()
    assert.equals(0, select("#", coroutine.yield()))
  end))

  it("counts as one iteration each", async(function()
    local c = iteration_counter()
    coroutine.yield() -- the counter's first tick runs during this one
    local base = c.n
    for _ = 1, 5 do coroutine.yield() end
    local n = c.n - base
    c.stop()
    assert.equals(5, n)
  end))
end)

describe("__await awaitables", function()
  it("await calls __await(obj) in the task and returns all its results", async(function()
    local Thing = {}
    Thing.__index = Thing
    Thing.__await = function(self)
      assert.is_not_nil(lasync.current_task())
      local v = soon(self.v):await()
      return v, nil, "extra"
    end
    local obj = setmetatable({v = 9}, Thing)
    assert.same({n = 3, 9, nil, "extra"}, table.pack(lasync.await(obj)))
  end))

  it("__await may return nothing, and may raise", async(function()
    local empty = setmetatable({}, {__await = function() end})
    assert.equals(0, select("#", lasync.await(empty)))
    local bad = setmetatable({}, {__await = function() soon():await() error({tag = "aw"}) end})
    local ok, e = pcall(lasync.await, bad)
    assert.is_false(ok)
    assert.equals("aw", e.tag)
  end))

  it("__await on a userdata-like proxy forwarding to a future", async(function()
    local f = lasync.future()
    local proxy = setmetatable({}, {__await = function() return f:await() end})
    lasync.get_loop():call_soon(f.set_result, f, "fwd")
    assert.equals("fwd", lasync.await(proxy))
  end))

  it("a value without __await is rejected with a clear error naming lasync.await", async(function()
    for _, v in ipairs({42, "str", {}, function() end, true}) do
      local ok, e = pcall(lasync.await, v)
      assert.is_false(ok)
      assert.matches("lasync.await", tostring(e))
      assert.matches(type(v), tostring(e))
    end
    local ok, e = pcall(lasync.await, nil)
    assert.is_false(ok)
    assert.matches("lasync.await", tostring(e))
    assert.matches("nil", tostring(e))
  end))
end)
