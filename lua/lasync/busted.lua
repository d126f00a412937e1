-- lasync.busted: run a busted spec body as a task on a fresh loop.
--
--   local async = require "lasync.busted"
--   it("waits", async(function() lasync.sleep(0.01) end))
--   it("slow", async({ timeout = 20 }, function() ... end))
--   local c = async.iteration_counter()   -- counts loop iterations (see below)
--
-- The spec fails when the body raises, when it runs past its timeout (default 5 s, or
-- LASYNC_SPEC_TIMEOUT; a body that ignores the cancellation then gets GRACE seconds more and
-- is abandoned), when any task's error reaches the loop's exception handler (an error nobody
-- retrieved, a failing callback), and when tasks, timers or ready callbacks are left behind
-- as the body returns. Options: `timeout`, `leaks = false` for a spec that leaves work on
-- purpose, `debug = true` to run the loop in debug mode. busted's own failures (assert) and
-- pending() keep their kind.
local lasync = require "lasync"

local DEFAULT_TIMEOUT = tonumber(os.getenv("LASYNC_SPEC_TIMEOUT")) or 5
local GRACE = 1

local function describe_error(e)
  local ok, s = pcall(tostring, e)
  if not ok then s = "(an error whose __tostring fails)" end
  if type(e) == "table" and type(rawget(e, "traceback")) == "string" then
    s = s .. "\n" .. rawget(e, "traceback")
  end
  return s
end

-- busted tells failures (assert) and pending() from errors by their metatables.
local function busted_kind(e)
  local mt = type(e) == "table" and debug.getmetatable(e)
  local kind = mt and rawget(mt, "__type")
  if kind == "failure" or kind == "pending" then return kind end
  return nil
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
    lasync.wait({body}, {timeout = timeout})
    if not body:done() then
      body:cancel("spec timed out")
      lasync.wait({body}, {timeout = GRACE})
      local msg = ("spec timed out after %g s"):format(timeout)
      if body:done() then
        pcall(body.result, body)
      else
        loop.shutdown_timeout = 0 -- it ignores cancellation: do not wait for it again
        msg = msg .. (" (and the body ignored its cancellation for %g s more)"):format(GRACE)
      end
      error(msg, 0)
    end
    local r = table.pack(pcall(body.result, body))
    if not r[1] then error(r[2], 0) end
    if opts.leaks ~= false then
      local tasks, timers, ready = loop:stats()
      tasks = tasks - 1 -- this task
      if tasks > 0 or timers > 0 or ready > 0 then
        error(("spec left %d task(s), %d timer(s) and %d ready callback(s) behind")
          :format(tasks, timers, ready), 0)
      end
    end
  end)
  local parts = {}
  if #reports > 0 then
    local lines = {}
    for i, ctx in ipairs(reports) do
      lines[i] = ctx.message .. (ctx.error ~= nil and (": " .. describe_error(ctx.error)) or "")
        .. (ctx.traceback and ("\n" .. ctx.traceback) or "")
    end
    parts[1] = "the loop reported:\n" .. table.concat(lines, "\n")
  end
  if not ok then
    local kind = busted_kind(err)
    if kind == "pending" and #parts == 0 then error(err, 0) end
    if kind == "failure" then -- kept a failure, with anything the loop reported added
      if #parts > 0 then rawset(err, "message", tostring(rawget(err, "message")) .. "\n" .. parts[1]) end
      error(err, 0)
    end
    table.insert(parts, 1, describe_error(err))
  end
  if #parts > 0 then error(table.concat(parts, "\n"), 0) end
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
