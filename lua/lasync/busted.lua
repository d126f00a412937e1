-- lasync.busted: run a busted spec body as a task on a fresh loop.
--
--   local async = require "lasync.busted"
--   it("waits", async(function() lasync.sleep(0.01) end))
--   it("slow", async({ timeout = 20 }, function() ... end))
--   local c = async.iteration_counter()   -- counts loop iterations (see below)
--
-- The spec fails when the body raises, when it runs past its timeout (default 5 s, or
-- LASYNC_SPEC_TIMEOUT), when any task's error reaches the loop's exception handler (an error
-- nobody retrieved, a failing callback), and when tasks or timers are left behind as the
-- body returns. Set `leaks = false` in the options for a spec that leaves work on purpose.
local lasync = require "lasync"

local DEFAULT_TIMEOUT = tonumber(os.getenv("LASYNC_SPEC_TIMEOUT")) or 5

local function describe_error(e)
  local ok, s = pcall(tostring, e)
  if not ok then s = "(an error whose __tostring fails)" end
  if type(e) == "table" and type(rawget(e, "traceback")) == "string" then
    s = s .. "\n" .. rawget(e, "traceback")
  end
  return s
end

local function run_body(opts, fn, ...)
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local reports = {}
  local args = table.pack(...)
  local ok, err = pcall(lasync.run, function()
    local loop = lasync.get_loop()
    loop:set_exception_handler(function(_, ctx) reports[#reports + 1] = ctx end)
    if opts.debug then loop:set_debug(true) end
    local body = lasync.spawn(fn, table.unpack(args, 1, args.n))

    local timed_out = false
    local timer = loop:call_later(timeout, function()
      timed_out = true
      body:cancel("spec timed out")
    end)
    local r = table.pack(pcall(body.await, body))
    timer:cancel()
    if timed_out then error(("spec timed out after %g s"):format(timeout), 0) end
    if not r[1] then error(r[2], 0) end
    if opts.leaks ~= false then
      local tasks, timers = loop:stats()
      tasks = tasks - 1 -- this task
      if tasks > 0 or timers > 0 then
        error(("spec left %d task(s) and %d timer(s) behind"):format(tasks, timers), 0)
      end
    end
  end)
  if not ok then error(describe_error(err), 0) end
  if #reports > 0 then
    local lines = {}
    for i, ctx in ipairs(reports) do
      lines[i] = ctx.message .. (ctx.error ~= nil and (": " .. describe_error(ctx.error)) or "")
        .. (ctx.traceback and ("\n" .. ctx.traceback) or "")
    end
    error("the loop reported:\n" .. table.concat(lines, "\n"), 0)
  end
end

-- async.iteration_counter() -> c: a callback that reschedules itself with call_soon, so
-- c.n counts loop iterations from here on (a spec can check that something took exactly one
-- iteration, or none, without timing anything); c.stop() ends it before the body returns.
local function iteration_counter()
  local loop = lasync.get_loop()
  local c = {n = 0}
  local function tick()
    c.n = c.n + 1
    c.h = loop:call_soon(tick)
  end
  c.h = loop:call_soon(tick)
  function c.stop() c.h:cancel() end
  return c
end

return setmetatable({iteration_counter = iteration_counter}, {
  __call = function(_, opts, fn)
    if fn == nil then opts, fn = {}, opts end
    assert(type(fn) == "function", "lasync.busted: expected a function for the spec body")
    return function(...) return run_body(opts, fn, ...) end
  end,
})
