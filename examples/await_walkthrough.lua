-- Seed 000, "Does await yield to the event loop?", ported to lasync.
-- Awaiting (or calling a function that awaits) jumps straight in; only a yield that reaches
-- the task gives the loop control. Run: lua5.4 examples/await_walkthrough.lua
local lasync = require "lasync"

local function task_print(s)
  print(("%s: %s"):format(lasync.current_task():get_name(), s))
end

local function other_task(s) task_print(s) end

-- An awaitable object: lasync.await(obj) calls its __await metamethod inside the task.
local Awaitable = {}
Awaitable.__index = Awaitable
function Awaitable.__await()
  task_print("    'Jumped straight into' another `await`; the act of `await awaitable` *itself* doesn't 'pause' anything")
  coroutine.yield() -- a bare yield reaches the task: the loop gets one iteration
  task_print("    We're back to our awaitable object because that other task completed")
  lasync.spawn(other_task, "The event loop gets control when `yield` points (from an iterable coroutine) propagate up to the `current_task` through a suitable chain of `await` or `yield from` statements")
end

local function coro()
  task_print("  'Jumped straight into' coro; the `await` keyword itself does nothing to 'pause' the current_task")
  lasync.await(setmetatable({}, Awaitable))
  task_print("  'Jumped straight back into' coro; we have another pending task, but leaving an `__await__` doesn't 'pause' the task any more than entering the `__await__` does")
end

local function iterable_coro(context)
  task_print(("`%s iterable_coro`: pre-yield"):format(context))
  coroutine.yield()
  task_print(("`%s iterable_coro`: post-yield"):format(context))
end

local function original_task()
  lasync.spawn(other_task, "Aha, but a (suitably unconsumed) *`yield`* DOES 'pause' the current_task allowing the event scheduler to `_wakeup` another task")
  task_print("Original task")
  coro()
  task_print("'Jumped straight out of' coro. Leaving a coro, as with leaving/entering any awaitable, doesn't give control to the event loop")
  iterable_coro("await")
  lasync.spawn(other_task, "This doesn't run until the very end because the generated None following the creation of this task is consumed by the `for` loop")
  -- The same function run as a plain generator: its yield is consumed here, not by the loop.
  local gen = coroutine.wrap(iterable_coro)
  local y = gen("for y in")
  task_print(("But 'ordinary' `yield` points (those which are consumed by the `current_task` itself) behave as ordinary without relinquishing control at the async/task-level; `y=%s`"):format(tostring(y)))
  gen()
  task_print("Done with original task")
end

lasync.run(original_task)
