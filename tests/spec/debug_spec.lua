-- Debug mode (SPEC 1.7, 2 "Debug mode"): slow callbacks and task steps, unretrieved errors,
-- tasks destroyed while pending, tasks that swallow CancelledError.
local lasync = require "lasync"
local async = require "lasync.busted"

local function busy(seconds)
  local t0 = os.clock()
  while os.clock() - t0 < seconds do end
end

-- Runs fn() with a recording exception handler and debug settings, then restores them.
local function with_reports(opts, fn)
  local loop = lasync.get_loop()
  local old_handler, old_debug, old_slow = loop:get_exception_handler(), loop:get_debug(),
    loop.slow_callback_duration
  local reports = {}
  loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
  if opts.debug ~= nil then loop:set_debug(opts.debug) end
  if opts.slow then loop.slow_callback_duration = opts.slow end
  local ok, e = pcall(fn)
  loop:set_exception_handler(old_handler)
  loop:set_debug(old_debug)
  loop.slow_callback_duration = old_slow
  if not ok then error(e, 0) end
  return reports
end

local function messages(reports)
  local m = {}
  for i, ctx in ipairs(reports) do m[i] = ctx.message end
  return m
end

local function find(reports, pattern)
  for _, ctx in ipairs(reports) do
    if ctx.message:find(pattern) then return ctx end
  end
  return nil
end

-- Fresh loop, handler installed first thing; returns every report, including those made as the
-- loop closes.
local function run_capturing(fn)
  local reports = {}
  local r = table.pack(pcall(lasync.run, function()
    local loop = lasync.get_loop()
    loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
    loop:set_debug(true)
    return fn()
  end))
  return reports, r
end

describe("loop debug settings", function()
  it("slow_callback_duration defaults to 0.1 and can be set", async(function()
    local loop = lasync.get_loop()
    assert.equals(0.1, loop.slow_callback_duration)
    loop.slow_callback_duration = 0.5
    assert.equals(0.5, loop.slow_callback_duration)
    loop.slow_callback_duration = 0.1
    assert.has_error(function() loop.slow_callback_duration = -1 end)
    assert.has_error(function() loop.slow_callback_duration = "fast" end,
      "loop.slow_callback_duration: must be a number >= 0")
    assert.has_error(function() loop.shutdown_timeout = "long" end,
      "loop.shutdown_timeout: must be a number >= 0")
  end))

  it("set_debug toggles get_debug", async(function()
    local loop = lasync.get_loop()
    local was = loop:get_debug()
    loop:set_debug(true)
    assert.is_true(loop:get_debug())
    loop:set_debug(false)
    assert.is_false(loop:get_debug())
    loop:set_debug(was)
  end))

  it("LASYNC_DEBUG=1 turns debug mode on for a run", function()
    local BUILD = os.getenv("LASYNC_BUILD") or "build"
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write('io.write(tostring(require("lasync").get_loop():get_debug()))\n')
    fh:close()
    local function run(env)
      local p = assert(io.popen(("%s '%s/bin/lasync' '%s' 2>&1"):format(env, BUILD, path)))
      local out = p:read("a")
      p:close()
      return out
    end
    local on, off = run("LASYNC_DEBUG=1"), run("LASYNC_DEBUG=0")
    os.remove(path)
    assert.equals("true", on)
    assert.equals("false", off)
  end)
end)

describe("slow callback reports", function()
  it("a slow task step is reported, naming the task and the source line", async(function()
    local t
    local line
    local reports = with_reports({debug = true, slow = 0.02}, function()
      t = lasync.spawn(function()
        busy(0.06)
        line = debug.getinfo(1, "l").currentline + 1
        lasync.sleep(0)
      end)
      t:await()
    end)
    local ctx = find(reports, "Task%-%d+")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    assert.matches(t:get_name(), ctx.message, 1, true)
    assert.matches("debug_spec.lua:" .. line, ctx.message)
    local secs = tonumber(ctx.message:match("took ([%d%.]+) seconds"))
    assert.is_number(secs)
    assert.is_true(secs >= 0.04, ctx.message)
  end))

  it("a slow last step, the one that finishes the task, still names the task", async(function()
    local reports = with_reports({debug = true, slow = 0.02}, function()
      local t = lasync.spawn(function()
        lasync.sleep(0)
        busy(0.05)
      end)
      t:set_name("finisher")
      t:await()
    end)
    local ctx = find(reports, "finisher")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    assert.matches("it finished", ctx.message, 1, true)
  end))

  it("a slow step that finishes the task names the line the step began at", async(function()
    local first, resumed
    local reports = with_reports({debug = true, slow = 0.02}, function()
      first = debug.getinfo(1, "l").currentline + 1
      lasync.spawn(function()
        busy(0.05)
      end):await()
      lasync.spawn(function()
        resumed = debug.getinfo(1, "l").currentline + 1
        lasync.sleep(0)
        busy(0.05)
      end):await()
    end)
    assert.equals(2, #reports, table.concat(messages(reports), "\n"))
    assert.matches("it finished", reports[1].message, 1, true)
    assert.matches("debug_spec.lua:" .. first .. "%)", reports[1].message)
    assert.matches("debug_spec.lua:" .. resumed .. "%)", reports[2].message)
  end))

  it("names a task by the name it was given", async(function()
    local reports = with_reports({debug = true, slow = 0.02}, function()
      local t = lasync.spawn(function()
        busy(0.05)
        lasync.sleep(0)
      end)
      t:set_name("named-worker")
      t:await()
    end)
    assert.is_not_nil(find(reports, "named%-worker"), table.concat(messages(reports), "\n"))
  end))

  it("a slow callback is reported, naming where the callback was defined", async(function()
    local line
    local reports = with_reports({debug = true, slow = 0.02}, function()
      local f = lasync.future()
      line = debug.getinfo(1, "l").currentline + 1
      lasync.get_loop():call_soon(function() busy(0.05) f:set_result() end)
      f:await()
    end)
    local ctx = find(reports, "callback")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    local secs = tonumber(ctx.message:match("took ([%d%.]+) seconds"))
    assert.is_true(secs >= 0.04, ctx.message)
    assert.matches("debug_spec.lua:" .. line, ctx.message)
  end))

  it("a slow done callback is reported with its own line, not an earlier callback's", async(function()
    local line
    local reports = with_reports({debug = true, slow = 0.02}, function()
      local f, w = lasync.future(), lasync.future()
      lasync.get_loop():call_soon(function() end)  -- a fast callback runs first
      line = debug.getinfo(1, "l").currentline + 1
      f:add_done_callback(function() busy(0.05) w:set_result() end)
      f:set_result()
      w:await()
    end)
    local ctx = find(reports, "callback")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    assert.matches("debug_spec.lua:" .. line, ctx.message)
  end))

  it("fast steps are not reported", async(function()
    local reports = with_reports({debug = true, slow = 0.5}, function()
      for _ = 1, 20 do lasync.sleep(0) end
      lasync.spawn(function() lasync.sleep(0) end):await()
    end)
    assert.same({}, messages(reports))
  end))

  it("nothing is reported without debug mode", async(function()
    local reports = with_reports({debug = false, slow = 0.01}, function()
      lasync.spawn(function()
        busy(0.04)
        lasync.sleep(0)
      end):await()
      lasync.get_loop():call_soon(busy, 0.04)
      lasync.sleep(0)
    end)
    assert.same({}, messages(reports))
  end))
end)

describe("debug-mode reports", function()
  it("an unretrieved task error is reported once, at collection", function()
    local reports = run_capturing(function()
      lasync.spawn(function() error("dropped on the floor") end)
      lasync.sleep(0)
      for _ = 1, 3 do
        collectgarbage("collect")
        lasync.sleep(0)
      end
      return "ok"
    end)
    local n = 0
    for _, ctx in ipairs(reports) do
      if ctx.message:find("never retrieved") then
        n = n + 1
        assert.matches("dropped on the floor", tostring(ctx.error))
      end
    end
    assert.equals(1, n)
  end)

  it("an unretrieved task error is reported once, at loop close", function()
    local keep
    local reports = run_capturing(function()
      keep = lasync.spawn(function() error("still referenced") end)
      lasync.sleep(0)
    end)
    local n = 0
    for _, ctx in ipairs(reports) do
      if ctx.message:find("never retrieved") then n = n + 1 end
    end
    assert.equals(1, n)
    assert.is_true(keep:done())
  end)

  it("a task still pending when the loop closes is reported as destroyed while pending", function()
    local line
    local reports, r = run_capturing(function()
      lasync.spawn(function()
        -- swallows the cancellation run sends, then waits on something nobody completes
        pcall(lasync.sleep, 1000)
        line = debug.getinfo(1, "l").currentline + 1
        lasync.future():await()
      end)
      lasync.sleep(0)
      return "main done"
    end)
    assert.is_true(r[1])
    assert.equals("main done", r[2])
    local ctx = find(reports, "destroyed but it is pending")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    assert.matches("Task%-%d+", ctx.message)
    assert.matches("debug_spec.lua:" .. line, ctx.message)
  end)

  it("a task that swallows CancelledError and returns is reported", async(function()
    local t
    local reports = with_reports({debug = true}, function()
      t = lasync.spawn(function()
        pcall(lasync.sleep, 1000)
        return "ignored the cancel"
      end)
      lasync.sleep(0)
      t:cancel()
      assert.equals("ignored the cancel", t:await())
    end)
    local ctx = find(reports, "CancelledError")
    assert.is_not_nil(ctx, table.concat(messages(reports), "\n"))
    assert.matches(t:get_name(), ctx.message, 1, true)
    assert.equals(t, ctx.task)
  end))

  it("a task that catches CancelledError but uncancels is not reported", async(function()
    local reports = with_reports({debug = true}, function()
      local t = lasync.spawn(function()
        pcall(lasync.sleep, 1000)
        lasync.current_task():uncancel()
        return "deliberate"
      end)
      lasync.sleep(0)
      t:cancel()
      assert.equals("deliberate", t:await())
    end)
    assert.same({}, messages(reports))
  end))

  it("a task that swallows CancelledError is not reported without debug mode", async(function()
    local reports = with_reports({debug = false}, function()
      local t = lasync.spawn(function()
        pcall(lasync.sleep, 1000)
        return 1
      end)
      lasync.sleep(0)
      t:cancel()
      t:await()
    end)
    assert.same({}, messages(reports))
  end))

  it("a task that re-raises CancelledError is not reported", async(function()
    local reports = with_reports({debug = true}, function()
      local t = lasync.spawn(function()
        local ok, e = pcall(lasync.sleep, 1000)
        error(e, 0)
      end)
      lasync.sleep(0)
      t:cancel()
      assert.is_false(pcall(t.await, t))
    end)
    assert.same({}, messages(reports))
  end))

  it("an exception handler that fails does not break the loop (both go to stderr)", async(function()
    local loop = lasync.get_loop()
    local old = loop:get_exception_handler()
    loop:set_exception_handler(function() error("handler broken") end)
    local ok = pcall(function()
      loop:call_soon(function() error("cb error") end)
      lasync.sleep(0)
    end)
    loop:set_exception_handler(old)
    assert.is_true(ok)
    assert.equals(3, lasync.sleep(0, 3))
  end))
end)
