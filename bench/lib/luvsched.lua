-- A minimal, fair coroutine scheduler on lua-luv: the kind of thing a Lua user writes
-- when they want async/await on libuv without a framework.  Used as the "luv" peer.
--
--   * ready queue: FIFO of coroutines.  A libuv check handle drains it once per loop
--     iteration, running only what was ready when the iteration began (so sleep(0)
--     gives up exactly one iteration, like asyncio's call_soon).  An idle handle is
--     active while the queue is non-empty so that uv_run never blocks in poll then.
--   * tasks are futures; await on a pending future parks the coroutine in its waiter
--     list and yields; completion moves the waiters to the ready queue.
--   * sleep(0) = reschedule self + yield; sleep(t > 0) = one uv timer.
local uv = require "luv"

local M = {}

local ready, rhead, rtail = {}, 1, 0
local check, idle = uv.new_check(), uv.new_idle()
local active = false
local function noop() end

local function run_ready()
  local last = rtail -- only what was ready when this iteration began
  while rhead <= last do
    local co = ready[rhead]
    ready[rhead] = nil
    rhead = rhead + 1
    local ok, err = coroutine.resume(co)
    if not ok then error(debug.traceback(co, err), 0) end
  end
  if rhead > rtail then
    active = false
    check:stop()
    idle:stop()
  end
end

local function schedule(co)
  rtail = rtail + 1
  ready[rtail] = co
  if not active then
    active = true
    check:start(run_ready)
    idle:start(noop)
  end
end
M.schedule = schedule

local Future = {}
Future.__index = Future

function M.future()
  return setmetatable({ done = false }, Future)
end

function Future:set_result(v)
  assert(not self.done, "result set twice")
  self.done, self.value = true, v
  local w = self.waiters
  if w then
    self.waiters = nil
    for i = 1, #w do schedule(w[i]) end
  end
end

function Future:await()
  if not self.done then
    local w = self.waiters
    if not w then w = {}; self.waiters = w end
    w[#w + 1] = coroutine.running()
    coroutine.yield()
  end
  return self.value
end

-- spawn(fn): a task is a future resolved with fn's (first) result
function M.spawn(fn)
  local t = setmetatable({ done = false }, Future)
  local co = coroutine.create(function() t:set_result(fn()) end)
  schedule(co)
  return t
end

function M.sleep(delay)
  local co = coroutine.running()
  if delay <= 0 then
    schedule(co)
  else
    local timer = uv.new_timer()
    timer:start(math.floor(delay * 1000), 0, function()
      timer:close()
      schedule(co)
    end)
  end
  coroutine.yield()
end

function M.now() return uv.hrtime() / 1e9 end

function M.run(fn)
  local main = M.spawn(fn)
  uv.run()
  assert(main.done, "loop stopped before the main task finished")
  return main.value
end

return M
