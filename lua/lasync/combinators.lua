-- lasync.combinators: gather, wait, wait_for, timeout, shield, as_completed and task_group,
-- in pure Lua on the core's futures, tasks and timers.
--
-- A combinator never awaits a child directly: it awaits a private future that the children's
-- done callbacks (or its own timer) complete. So an error raised at that await is always the
-- waiting task's own cancellation, never a child's outcome, and the core's handling of a
-- cancelled awaiter cannot touch a child behind the combinator's back. Children are
-- cancelled explicitly, where the semantics below say so, and then waited for
-- ("cancel and settle"): a combinator that cancels children returns or raises only once
-- they have finished, so nothing it started outlives it.
--
-- The module returns an installer, called by the C module at load with the lasync table.

return function(lasync)
  local future, await, spawn = lasync.future, lasync.await, lasync.spawn
  local is_cancelled = lasync.is_cancelled
  local error, pcall, select, type, tostring = error, pcall, select, type, tostring
  local getmetatable, setmetatable = getmetatable, setmetatable
  local pack, unpack = table.pack, table.unpack

  -- Whether x is a lasync Future or Task: anything with future methods. Decided once per
  -- metatable.
  local future_mt = setmetatable({}, {__mode = "k"})
  local function is_future(x)
    local mt = getmetatable(x)
    if mt == nil or type(mt) ~= "table" then return false end
    local known = future_mt[mt]
    if known == nil then
      local ok, f = pcall(function() return x.add_done_callback end)
      known = ok and f ~= nil and true or false
      future_mt[mt] = known
    end
    return known
  end

  -- Turns an argument into a future: functions are spawned as tasks, futures and tasks are
  -- used as they are, other awaitables (an __await metamethod) are awaited by a new task.
  local function awaitable_kind(aw)
    if type(aw) == "function" then return "function" end
    if is_future(aw) then return "future" end
    local mt = getmetatable(aw)
    if type(mt) == "table" and mt.__await then return "awaitable" end
    return nil
  end

  local function check(aw, name, i, level)
    if not awaitable_kind(aw) then
      error(name .. ": argument #" .. i .. " is not awaitable (got " .. type(aw) .. ")", level + 1)
    end
  end

  local function ensure(aw, name, i)
    local kind = awaitable_kind(aw)
    if kind == "future" then return aw end
    if kind == "function" then return spawn(aw) end
    if kind == "awaitable" then return spawn(await, aw) end
    error(name .. ": argument #" .. i .. " is not awaitable (got " .. type(aw) .. ")", 3)
  end

  -- Checks every element before spawning any, so that a bad argument leaves no task behind.
  local function ensure_list(list, name)
    if type(list) ~= "table" then
      error(name .. ": expected a list of awaitables, got " .. type(list), 3)
    end
    local n = #list
    for i = 1, n do check(list[i], name, i, 3) end
    local futs = {}
    for i = 1, n do futs[i] = ensure(list[i], name, i) end
    return futs
  end

  local function check_delay(name, d)
    if d ~= nil and type(d) ~= "number" then
      error(name .. ": timeout must be a number of seconds, got " .. type(d), 3)
    end
    if d ~= d then error(name .. ": timeout is NaN", 3) end
    if d ~= nil and d < 0 then d = 0 end
    return d
  end

  -- Whether a done future failed (or was cancelled), and its error. Decided by the outcome,
  -- not the error value: a task may fail with error() (a nil error), which is still a failure.
  local function failure(f)
    local ok, e = pcall(f.result, f)
    return not ok, e
  end

  local function wake(w) if not w:done() then w:set_result() end end

  -- Waits until futs[1..n] are all done. If the running task is cancelled meanwhile, the
  -- futures are cancelled again and the waiting goes on; the last such CancelledError is
  -- returned so that the caller can re-raise it once everything has settled.
  local function settle(futs, n)
    local cancel_err
    for i = 1, n do
      local f = futs[i]
      while not f:done() do
        local w = future()
        local cb = function() wake(w) end
        f:add_done_callback(cb)
        local ok, e = pcall(await, w)
        if not ok then
          f:remove_done_callback(cb)
          if not is_cancelled(e) then error(e, 0) end
          cancel_err = e
          for j = i, n do futs[j]:cancel() end
        end
      end
    end
    return cancel_err
  end

  -- Attaches the other errors to the first one: a table error gets them as err.others; a
  -- string error gets them appended to its text ("(also in <where>) ...").
  local function with_others(errs, where)
    local first = errs[1]
    if errs.n == 1 then return first end
    local others = {table.unpack(errs, 2, errs.n)}
    if type(first) == "table" then
      rawset(first, "others", others)
      return first
    end
    local lines = {tostring(first)}
    for i = 1, errs.n - 1 do
      lines[#lines + 1] = "\n(also in " .. where .. ") " .. tostring(others[i])
    end
    return table.concat(lines)
  end

  -- Adds error e to errs ({n =, seen =}) unless that very value is there already: a task
  -- that awaited a failed sibling (or a task group's body that awaited a child) and let the
  -- error through raises the same value. That is one failure, not two, and a table error
  -- must not list itself among its others.
  local function collect(errs, e)
    if e ~= nil and e == e then        -- nil and NaN cannot be keys
      if errs.seen[e] then return end
      errs.seen[e] = true
    end
    errs.n = errs.n + 1
    errs[errs.n] = e
  end

  -- Retrieves the outcome of every child, for a combinator that raises `first` (one child's
  -- failure, or its own cancellation): the errors of the other children that failed (not
  -- those merely cancelled) come with it, as with_others attaches them, never dropped.
  local function retrieve_all(futs, n, raised, first, where)
    local errs, seen = {n = 0, seen = {}}, {}
    collect(errs, first)
    for i = 1, n do
      local f = futs[i]
      local failed, e = failure(f)
      if failed and f ~= raised and not f:cancelled() and not seen[f] then
        seen[f] = true
        collect(errs, e)
      end
    end
    return with_others(errs, where)
  end

  local function cancel_all(futs, n)
    for i = 1, n do futs[i]:cancel() end
  end

  -- Keeps an outside cancellation that a combinator consumed alive: the task's next await
  -- raises CancelledError again (asyncio's uncancel-then-cancel idiom).
  local function rearm(task)
    if task and task:cancelling() > 0 then
      task:uncancel()
      task:cancel()
    end
  end

  --------------------------------------------------------------------------------- gather

  -- gather(...) -> the first result of each awaitable, in argument order. On the first
  -- failure (error or cancellation of a child) the other children are cancelled and, once
  -- they have finished, that failure is raised. Cancelling the waiting task cancels all the
  -- children, waits for them, and raises CancelledError.
  function lasync.gather(...)
    local n = select("#", ...)
    if n == 0 then return end
    local futs = {...}
    for i = 1, n do check(futs[i], "lasync.gather", i, 2) end
    for i = 1, n do futs[i] = ensure(futs[i], "lasync.gather", i) end
    local left, failed = 0, nil
    for i = 1, n do
      local f = futs[i]
      if not f:done() then
        left = left + 1
      elseif not failed and failure(f) then
        failed = f
      end
    end
    if left > 0 and not failed then
      local w = future()
      local cb = function(f)
        left = left - 1
        if not failed and failure(f) then failed = f end
        if left == 0 or failed then wake(w) end
      end
      for i = 1, n do
        if not futs[i]:done() then futs[i]:add_done_callback(cb) end
      end
      local ok, e = pcall(await, w)
      if not ok then
        for i = 1, n do futs[i]:remove_done_callback(cb) end
        cancel_all(futs, n)
        settle(futs, n)
        error(retrieve_all(futs, n, nil, e, "gather"), 0)
      end
      if failed then
        for i = 1, n do futs[i]:remove_done_callback(cb) end
      end
    end
    if failed then
      cancel_all(futs, n)
      if settle(futs, n) then rearm(lasync.current_task()) end
      error(retrieve_all(futs, n, failed, select(2, failure(failed)), "gather"), 0)
    end
    local res = {}
    for i = 1, n do res[i] = (futs[i]:result()) end
    return unpack(res, 1, n)
  end

  ----------------------------------------------------------------------------------- wait

  local return_whens = {all = true, first = true, error = true}

  -- wait(list, opts) -> done, pending (lists, in argument order). opts.timeout (seconds)
  -- and opts.return_when = "all" (default) | "first" | "error". Never cancels anything.
  function lasync.wait(list, opts)
    if opts ~= nil and type(opts) ~= "table" then
      error("lasync.wait: opts must be a table ({timeout =, return_when =}), got "
        .. type(opts), 2)
    end
    opts = opts or {}
    local timeout = check_delay("lasync.wait", opts.timeout)
    local rw = opts.return_when or "all"
    if not return_whens[rw] then
      error("lasync.wait: return_when must be \"all\", \"first\" or \"error\", got "
        .. tostring(rw), 2)
    end
    local futs = ensure_list(list, "lasync.wait")
    local n = #futs
    if n == 0 then error("lasync.wait: the list is empty (nothing to wait for)", 2) end
    local left, hit = 0, false
    for i = 1, n do
      local f = futs[i]
      if not f:done() then
        left = left + 1
      elseif rw == "first" or (rw == "error" and not f:cancelled() and failure(f)) then
        hit = true
      end
    end
    if left > 0 and not hit then
      local w = future()
      local cb = function(f)
        left = left - 1
        if left == 0 or rw == "first"
            or (rw == "error" and not f:cancelled() and failure(f)) then
          wake(w)
        end
      end
      for i = 1, n do
        if not futs[i]:done() then futs[i]:add_done_callback(cb) end
      end
      local h
      if timeout then h = lasync.get_loop():call_later(timeout, wake, w) end
      local ok, e = pcall(await, w)
      if h then h:cancel() end
      for i = 1, n do
        if not futs[i]:done() then futs[i]:remove_done_callback(cb) end
      end
      if not ok then error(e, 0) end
    end
    local done, pending = {}, {}
    for i = 1, n do
      local f = futs[i]
      if f:done() then done[#done + 1] = f else pending[#pending + 1] = f end
    end
    return done, pending
  end

  ------------------------------------------------------------------------------- wait_for

  -- wait_for(aw, timeout) -> aw's results. At the deadline aw is cancelled and, once it has
  -- finished, TimeoutError is raised (if it finished with a result or an error after all,
  -- that is delivered instead: exactly one outcome). Cancelling the waiting task cancels aw,
  -- waits for it and raises CancelledError, even when the deadline fell in the same
  -- iteration. A nil timeout waits forever.
  function lasync.wait_for(aw, timeout)
    timeout = check_delay("lasync.wait_for", timeout)
    local fut = ensure(aw, "lasync.wait_for", 1)
    if fut:done() then return fut:result() end
    if timeout ~= 0 then
      local w = future()
      local cb = function() wake(w) end
      fut:add_done_callback(cb)
      local h
      if timeout then h = lasync.get_loop():call_later(timeout, wake, w) end
      local ok, e = pcall(await, w)
      if h then h:cancel() end
      if not ok then
        fut:remove_done_callback(cb)
        if not is_cancelled(e) then error(e, 0) end
        fut:cancel()
        settle({fut}, 1)
        failure(fut)                   -- the outside cancellation wins over fut's outcome
        error(e, 0)
      end
      if fut:done() then return fut:result() end
      fut:remove_done_callback(cb)
    end
    -- Our own deadline. One that has already passed (timeout <= 0) cancels aw at once, so a
    -- function given as aw never runs, as with asyncio.
    fut:cancel()
    local cerr = settle({fut}, 1)
    if cerr then error(cerr, 0) end      -- an outside cancellation arrived meanwhile: it wins
    if fut:cancelled() then
      error(lasync.TimeoutError("wait_for: timed out after " .. timeout .. " s"), 0)
    end
    return fut:result()
  end

  -------------------------------------------------------------------------------- timeout

  -- timeout(delay, fn, ...) -> fn's results. fn runs in the calling task; at the deadline
  -- the task is cancelled, and the CancelledError that comes out of fn is turned into a
  -- TimeoutError if, and only if, no other cancellation of the task is pending (asyncio's
  -- cancelling()/uncancel() protocol). So an outside cancellation passes through as
  -- CancelledError, and of nested timeouts that expire together only the outermost raises.
  function lasync.timeout(delay, fn, ...)
    delay = check_delay("lasync.timeout", delay)
    if type(fn) ~= "function" then
      error("lasync.timeout: expected a function as argument #2, got " .. type(fn), 2)
    end
    local task = lasync.current_task()
    if not task then error("lasync.timeout: must be called from a task", 2) end
    if delay == nil then return fn(...) end
    local base = task:cancelling()
    local expired = false
    local function expire()
      expired = true
      task:cancel()
    end
    -- A deadline that has already passed cancels at fn's first suspension: call_soon runs
    -- before whatever fn then waits for, where a timer due now might not.
    local loop = lasync.get_loop()
    local h = delay > 0 and loop:call_later(delay, expire) or loop:call_soon(expire)
    local r = pack(pcall(fn, ...))
    h:cancel()
    if expired and task:uncancel() <= base and not r[1] and is_cancelled(r[2]) then
      error(lasync.TimeoutError("timeout: timed out after " .. delay .. " s"), 0)
    end
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end

  --------------------------------------------------------------------------------- shield

  -- shield(aw) -> aw's results. Cancelling the waiting task raises CancelledError in it but
  -- leaves aw running.
  function lasync.shield(aw)
    local fut = ensure(aw, "lasync.shield", 1)
    if fut:done() then return fut:result() end
    local w = future()
    local cb = function() wake(w) end
    fut:add_done_callback(cb)
    local ok, e = pcall(await, w)
    if not ok then
      fut:remove_done_callback(cb)
      error(e, 0)
    end
    return fut:result()
  end

  --------------------------------------------------------------------------- as_completed

  -- for fut in as_completed(list[, timeout]) do ... end: yields the futures in completion
  -- order (those already done first, in list order). Raises TimeoutError from the iterator
  -- when the deadline passes first. Cancels nothing. Breaking out of the loop releases the
  -- timer and the callbacks (the iterator's closing value).
  function lasync.as_completed(list, timeout)
    timeout = check_delay("lasync.as_completed", timeout)
    local futs = ensure_list(list, "lasync.as_completed")
    local n = #futs
    local doneq, qh, qt = {}, 1, 0
    local yielded, expired, closed = 0, false, false
    local w, h
    local function cb(f)
      qt = qt + 1
      doneq[qt] = f
      if w then wake(w) end
    end
    for i = 1, n do
      local f = futs[i]
      if f:done() then
        qt = qt + 1
        doneq[qt] = f
      else
        f:add_done_callback(cb)
      end
    end
    local function close()
      if closed then return end
      closed = true
      if h then h:cancel() end
      for i = 1, n do
        if not futs[i]:done() then futs[i]:remove_done_callback(cb) end
      end
    end
    if timeout and qt < n then
      h = lasync.get_loop():call_later(timeout, function()
        expired = true
        if w then wake(w) end
      end)
    end
    local function iter()
      if yielded == n then close(); return nil end
      while qh > qt do
        if closed and not expired then
          error("lasync.as_completed: the iterator was closed (the loop over it ended)", 2)
        end
        if expired then
          close()
          error(lasync.TimeoutError("as_completed: timed out after " .. timeout .. " s"), 2)
        end
        w = future()
        local ok, e = pcall(await, w)
        w = nil
        if not ok then close(); error(e, 0) end
      end
      local f = doneq[qh]
      doneq[qh] = nil
      qh = qh + 1
      yielded = yielded + 1
      if yielded == n then close() end
      return f
    end
    return iter, nil, nil, setmetatable({}, {__close = close})
  end

  ----------------------------------------------------------------------------- task_group

  local TaskGroup = {__name = "lasync.TaskGroup"}
  TaskGroup.__index = TaskGroup

  -- Records a failure, cancels every child still running and, while the body is still
  -- running, the parent task too (so that the body's current await is interrupted).
  local function abort(tg)
    tg._aborting = true
    for t in pairs(tg._children) do t:cancel() end
    if not tg._exiting and not tg._parent_cancelled then
      tg._parent_cancelled = true
      tg._parent:cancel()
    end
  end

  local function on_child_done(tg, t)
    tg._children[t] = nil
    tg._n = tg._n - 1
    if not t:cancelled() then
      local failed, e = failure(t)
      if failed then
        collect(tg._errors, e)
        tg._failed[#tg._failed + 1] = t
        abort(tg)
      end
    end
    if tg._n == 0 and tg._waiter then wake(tg._waiter) end
  end

  -- tg:spawn(fn, ...) -> Task. A child spawned after the group started aborting is
  -- cancelled at once (it never runs); spawning after the group finished is an error.
  function TaskGroup:spawn(fn, ...)
    if self._closed then error("TaskGroup.spawn: the task group has finished", 2) end
    if type(fn) ~= "function" then
      error("TaskGroup.spawn: expected a function, got " .. type(fn), 2)
    end
    local t = spawn(fn, ...)
    self._children[t] = true
    self._n = self._n + 1
    t:add_done_callback(self._cb)
    if self._aborting then t:cancel() end
    return t
  end


  -- task_group(fn) -> fn's results. fn(tg) runs in the calling task and spawns children
  -- with tg:spawn; the group returns once every child has finished. The first failure (a
  -- child's error or the body's) cancels the other children and the body; all errors are
  -- collected, the first is raised with the others attached. Cancelling the calling task
  -- cancels the children, waits for them and raises CancelledError.
  function lasync.task_group(fn)
    if type(fn) ~= "function" then
      error("lasync.task_group: expected a function, got " .. type(fn), 2)
    end
    local parent = lasync.current_task()
    if not parent then error("lasync.task_group: must be called from a task", 2) end
    local tg = setmetatable({
      _parent = parent, _children = {}, _n = 0, _errors = {n = 0, seen = {}}, _failed = {},
      _aborting = false, _exiting = false, _closed = false, _parent_cancelled = false,
    }, TaskGroup)
    tg._cb = function(t) on_child_done(tg, t) end
    local base = parent:cancelling()
    local r = pack(pcall(fn, tg))
    tg._exiting = true
    local cancel_err
    if not r[1] then
      if is_cancelled(r[2]) then
        cancel_err = r[2]
        abort(tg)
      else
        collect(tg._errors, r[2])
        abort(tg)
      end
    end
    while tg._n > 0 do
      local w = future()
      tg._waiter = w
      local ok, e = pcall(await, w)
      tg._waiter = nil
      if not ok then
        if not is_cancelled(e) then error(e, 0) end
        cancel_err = e
        abort(tg)
      end
    end
    tg._closed = true
    if tg._parent_cancelled and parent:uncancel() <= base then
      cancel_err = nil                       -- the only cancellation was our own
    end
    if tg._errors.n > 0 then
      -- The children's errors were collected in done callbacks, outside any task; retrieving
      -- them again here, in the parent, adds the parent to their chains ("awaited by").
      for _, t in ipairs(tg._failed) do failure(t) end
      if cancel_err then rearm(parent) end   -- errors win; the outside cancel stays pending
      error(with_others(tg._errors, "the task group"), 0)
    end
    if cancel_err then error(cancel_err, 0) end
    return unpack(r, 2, r.n)
  end
end
