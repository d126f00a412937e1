-- lasync.sync: Queue, Event, Lock, Semaphore and Condition in pure Lua on the core's futures.
--
-- Every primitive keeps its waiters as pending futures in a FIFO ring and hands what a waiter
-- waits for (an item, a permit, the lock, a free queue slot) directly to the oldest live
-- waiter, so a newcomer can never overtake it (FIFO fairness). A waiter that gives up (its
-- task is cancelled) is not searched for: its future is cancelled and skipped when it reaches
-- the front of the ring (lazy deletion, no scanning). If the hand-over and the cancellation
-- race in one loop iteration, the hand-over wins: the core delivers it and the cancellation
-- comes at the task's next suspension. Should a waiter ever raise with something handed to
-- it all the same, it passes that on to the next waiter, so nothing is taken by a task that
-- raised and nothing is lost.
--
-- The module returns an installer, called by the C module at load with the lasync table.

return function(lasync)
  local future, await = lasync.future, lasync.await
  local error, pcall, setmetatable, type, tostring = error, pcall, setmetatable, type, tostring
  local math_type, tointeger = math.type, math.tointeger
  local is_cancelled = lasync.is_cancelled

  -- A FIFO ring of waiter futures: {h = first, t = last}. Indices restart at 1 whenever the
  -- ring empties so the array part of the table is reused.
  local function ring() return {h = 1, t = 0} end

  local function push(r, v)
    local t = r.t + 1
    r.t = t
    r[t] = v
  end

  -- Future:done and :set_result, fetched from the first waiter future (the methods are the
  -- same for all); calling them directly skips a metatable lookup on the hot paths.
  local f_done, f_set_result

  local function new_waiter()
    local f = future()
    if not f_done then f_done, f_set_result = f.done, f.set_result end
    return f
  end

  -- Removes and returns the oldest waiter whose future is still pending; waiters that gave
  -- up are dropped on the way. Returns nil when no live waiter is left.
  local function pop_live(r)
    local h, t = r.h, r.t
    while h <= t do
      local f = r[h]
      r[h] = nil
      h = h + 1
      if not f_done(f) then
        if h > t then r.h, r.t = 1, 0 else r.h = h end
        return f
      end
    end
    r.h, r.t = 1, 0
    return nil
  end

  -- Suspends the running task on a fresh waiter future queued on ring r. Returns true and the
  -- waiter's value, or false, the error (the task's CancelledError) and whether the waiter had
  -- already been handed something before the cancellation reached the task.
  local function wait_on(r)
    local fut = new_waiter()
    push(r, fut)
    local ok, v = pcall(await, fut)
    if ok then return true, v end
    if fut:done() then
      if not fut:cancelled() then return false, v, true, fut end
    else
      fut:cancel()                     -- mark it dead; pop_live skips it
    end
    return false, v, false
  end

  local function check_size(name, n, what)
    local i = type(n) == "number" and tointeger(n) or nil
    if i == nil or i < 0 then
      local got = type(n) == "number" and tostring(n) or type(n)
      error(name .. ": " .. what .. " must be a non-negative integer, got " .. got, 3)
    end
    return i
  end

  -- Guards: acquire() returns one; closing it (as a <close> variable, or guard:release())
  -- releases what was acquired, once. A Lock guard carries the token of its acquisition and
  -- releases only while that acquisition holds the lock: after an explicit lock:release()
  -- it must not release the next holder's.
  local Guard = {__name = "lasync.Guard"}
  Guard.__index = Guard
  function Guard.__close(g)
    local owner, token = g[1], g[2]
    if owner then
      g[1] = false
      if token == nil or owner._holder == token then owner:release() end
    end
  end
  Guard.release = Guard.__close
  local function guard(owner, token) return setmetatable({owner, token}, Guard) end

  ---------------------------------------------------------------------------------- Queue

  local Queue = {__name = "lasync.Queue"}
  Queue.__index = Queue

  -- Queue([maxsize]): maxsize nil or 0 means unbounded.
  function lasync.Queue(maxsize)
    local max = 0
    if maxsize ~= nil then max = check_size("lasync.Queue", maxsize, "maxsize") end
    return setmetatable({
      _max = max,
      _items = ring(),     -- buffered items
      _getters = ring(),   -- futures of tasks waiting in get()
      _putters = ring(),   -- futures of tasks waiting for a free slot in put()
      _reserved = 0,       -- free slots granted to woken putters that have not used them yet
      _unfinished = 0,     -- items put and not yet marked task_done()
      _joiners = ring(),
    }, Queue)
  end

  function Queue:qsize()
    local items = self._items
    return items.t - items.h + 1
  end

  function Queue:empty()
    local items = self._items
    return items.t < items.h
  end

  function Queue:full()
    local max = self._max
    if max == 0 then return false end
    local items = self._items
    return items.t - items.h + 1 + self._reserved >= max
  end

  function Queue:maxsize() return self._max end

  -- Hands item to the oldest live getter, or buffers it.
  local function deliver(self, item)
    self._unfinished = self._unfinished + 1
    local g = pop_live(self._getters)
    if g then
      f_set_result(g, item)
    else
      local items = self._items
      local t = items.t + 1
      items.t = t
      items[t] = item
    end
  end

  -- A slot was freed: grant it to the oldest waiting putter, if any.
  local function grant_slot(self)
    local max = self._max
    if max > 0 then
      local items = self._items
      if items.t - items.h + 1 + self._reserved < max then
        local p = pop_live(self._putters)
        if p then
          self._reserved = self._reserved + 1
          p:set_result(true)
        end
      end
    end
  end

  -- Takes the oldest buffered item (the caller checked there is one).
  local function take(self)
    local items = self._items
    local h = items.h
    local v = items[h]
    items[h] = nil
    if h == items.t then items.h, items.t = 1, 0 else items.h = h + 1 end
    grant_slot(self)
    return v
  end

  function Queue:put(item)
    if item == nil then error("Queue.put: nil cannot be put into a queue", 2) end
    local max = self._max
    if max > 0 then
      local items = self._items
      if items.t - items.h + 1 + self._reserved >= max then
        local ok, err, granted = wait_on(self._putters)
        if not ok then
          if granted then
            self._reserved = self._reserved - 1
            grant_slot(self)           -- pass our slot on; the item was never put
          end
          error(err, 0)
        end
        self._reserved = self._reserved - 1
        deliver(self, item)
        -- Handed straight to a waiting getter, the item took no slot: the one we were
        -- granted is free again, for the next waiting putter.
        grant_slot(self)
        return
      end
    end
    deliver(self, item)
  end

  -- -> true, or nil and a message when the queue is full.
  function Queue:put_nowait(item)
    if item == nil then error("Queue.put_nowait: nil cannot be put into a queue", 2) end
    if self:full() then return nil, "Queue.put_nowait: queue is full" end
    deliver(self, item)
    return true
  end

  function Queue:get()
    local items = self._items
    local h = items.h
    if h <= items.t then
      local v = items[h]
      items[h] = nil
      if h == items.t then items.h, items.t = 1, 0 else items.h = h + 1 end
      if self._max > 0 then grant_slot(self) end
      return v
    end
    -- Inlined wait_on(): this is the hot path of every hand-off between tasks. No pcall is
    -- needed: the core delivers an item handed over in the same iteration as a cancel (the
    -- cancel then comes at the task's next suspension), and a getter cancelled while
    -- waiting has its future cancelled, which pop_live skips. So nothing can be lost here.
    local fut = future()
    if not f_done then f_done, f_set_result = fut.done, fut.set_result end
    local r = self._getters
    local t = r.t + 1
    r.t = t
    r[t] = fut
    return await(fut)
  end

  -- -> the oldest item, or nil and a message when the queue is empty.
  function Queue:get_nowait()
    local items = self._items
    if items.h <= items.t then return take(self) end
    return nil, "Queue.get_nowait: queue is empty"
  end

  function Queue:task_done()
    local n = self._unfinished
    if n <= 0 then error("Queue.task_done: called more times than there were items", 2) end
    n = n - 1
    self._unfinished = n
    if n == 0 then
      local j = self._joiners
      local f = pop_live(j)
      while f do
        f:set_result(true)
        f = pop_live(j)
      end
    end
  end

  -- Waits until every item put has been marked task_done().
  function Queue:join()
    if self._unfinished == 0 then return end
    local ok, err = wait_on(self._joiners)
    if not ok then error(err, 0) end
  end

  function Queue:__tostring()
    return string.format("lasync.Queue(size=%d, maxsize=%d, unfinished=%d)",
      self:qsize(), self._max, self._unfinished)
  end

  ---------------------------------------------------------------------------------- Event

  local Event = {__name = "lasync.Event"}
  Event.__index = Event

  function lasync.Event()
    return setmetatable({_set = false, _w = ring()}, Event)
  end

  function Event:is_set() return self._set end

  -- Wakes every waiter (all in the next loop iteration).
  function Event:set()
    if self._set then return end
    self._set = true
    local w = self._w
    local f = pop_live(w)
    while f do
      f:set_result(true)
      f = pop_live(w)
    end
  end

  function Event:clear() self._set = false end

  function Event:wait()
    if self._set then return true end
    local ok, err = wait_on(self._w)
    if not ok then error(err, 0) end
    return true
  end

  function Event:__tostring()
    return "lasync.Event(" .. (self._set and "set" or "unset") .. ")"
  end

  ----------------------------------------------------------------------------------- Lock

  local Lock = {__name = "lasync.Lock"}
  Lock.__index = Lock

  function lasync.Lock()
    -- _holder: the token of the acquisition holding the lock (nil while handed over)
    return setmetatable({_locked = false, _w = ring(), _holder = nil, _gen = 0}, Lock)
  end

  function Lock:locked() return self._locked end

  local function held(self)
    local t = self._gen + 1
    self._gen = t
    self._holder = t
    return guard(self, t)
  end

  -- -> a guard; `local g <close> = lock:acquire()` releases at the end of the scope.
  function Lock:acquire()
    if not self._locked then
      self._locked = true
      return held(self)
    end
    local ok, err, handed = wait_on(self._w)
    if not ok then
      if handed then self:release() end  -- the lock was handed to us: pass it on
      error(err, 0)
    end
    return held(self)
  end

  -- Releasing hands the lock to the oldest waiter directly (it stays locked). As in asyncio,
  -- any task may release a locked Lock; a guard releases only its own acquisition.
  function Lock:release()
    if not self._locked then error("Lock.release: lock is not acquired", 2) end
    self._holder = nil
    local w = pop_live(self._w)
    if w then w:set_result(true) else self._locked = false end
  end

  function Lock:__tostring()
    return "lasync.Lock(" .. (self._locked and "locked" or "unlocked") .. ")"
  end

  ------------------------------------------------------------------------------ Semaphore

  local Semaphore = {__name = "lasync.Semaphore"}
  Semaphore.__index = Semaphore

  function lasync.Semaphore(n)
    local v = 1
    if n ~= nil then v = check_size("lasync.Semaphore", n, "initial value") end
    return setmetatable({_value = v, _w = ring()}, Semaphore)
  end

  function Semaphore:locked() return self._value == 0 end
  function Semaphore:value() return self._value end

  function Semaphore:acquire()
    local v = self._value
    if v > 0 then
      self._value = v - 1
      return guard(self)
    end
    local ok, err, handed = wait_on(self._w)
    if not ok then
      if handed then self:release() end  -- a permit was handed to us: pass it on
      error(err, 0)
    end
    return guard(self)
  end

  function Semaphore:release()
    local w = pop_live(self._w)
    if w then w:set_result(true) else self._value = self._value + 1 end
  end

  function Semaphore:__tostring()
    return "lasync.Semaphore(value=" .. self._value .. ")"
  end

  ------------------------------------------------------------------------------ Condition

  local Condition = {__name = "lasync.Condition"}
  Condition.__index = Condition

  function lasync.Condition(lock)
    if lock == nil then
      lock = lasync.Lock()
    elseif getmetatable(lock) ~= Lock then
      error("lasync.Condition: expected a lasync.Lock, got " .. tostring(lock), 2)
    end
    return setmetatable({_lock = lock, _w = ring()}, Condition)
  end

  -- -> a guard that releases the condition's lock.
  function Condition:acquire() return Lock.acquire(self._lock) end

  function Condition:release()
    local lock = self._lock
    if not lock._locked then error("Condition.release: lock is not acquired", 2) end
    lock:release()
  end

  function Condition:locked() return self._lock._locked end

  local function notify(self, n)
    local w = self._w
    while n > 0 do
      local f = pop_live(w)
      if not f then return end
      f:set_result(true)
      n = n - 1
    end
  end

  -- Re-takes the lock after a wait, even through cancellations; returns the last
  -- CancelledError seen, if any. Other errors propagate.
  local function reacquire(lock)
    local cancel_err
    while true do
      local ok, err = pcall(Lock.acquire, lock)
      if ok then return cancel_err end
      if not is_cancelled(err) then error(err, 0) end
      cancel_err = err
    end
  end

  -- Releases the lock, waits for notify(), and takes the lock again before returning or
  -- raising. A notification that reaches a task cancelled in the same iteration is passed
  -- on to another waiter.
  function Condition:wait()
    local lock = self._lock
    if not lock._locked then error("Condition.wait: lock is not acquired", 2) end
    local token = lock._holder
    lock:release()
    local ok, err, notified = wait_on(self._w)
    local err2 = reacquire(lock)
    lock._holder = token  -- the lock is held again by the acquisition that waited
    if not ok or err2 then
      if notified or (ok and err2) then notify(self, 1) end
      error(ok and err2 or err, 0)
    end
    return true
  end

  -- Waits until predicate() returns a true value, and returns that value.
  function Condition:wait_for(predicate)
    if type(predicate) ~= "function" and not (getmetatable(predicate) or {}).__call then
      error("Condition.wait_for: expected a predicate function, got " .. type(predicate), 2)
    end
    local r = predicate()
    while not r do
      self:wait()
      r = predicate()
    end
    return r
  end

  function Condition:notify(n)
    if not self._lock._locked then error("Condition.notify: lock is not acquired", 2) end
    if n == nil then n = 1 else n = check_size("Condition.notify", n, "n") end
    notify(self, n)
  end

  function Condition:notify_all()
    if not self._lock._locked then error("Condition.notify_all: lock is not acquired", 2) end
    notify(self, math.huge)
  end

  function Condition:__tostring()
    return "lasync.Condition(" .. (self._lock._locked and "locked" or "unlocked") .. ")"
  end
end
