-- Property-style cancellation safety of the synchronisation primitives: tasks are cancelled
-- at random points (while waiting, in the iteration an item or permit is handed to them, in
-- between), for many seeds, and the books must balance: every item put is received exactly
-- once or still queued, an item whose put() raised is nowhere, no permit or lock leaks, no
-- notification is lost.
local lasync = require "lasync"
local async = require "lasync.busted"

local SEEDS = tonumber(os.getenv("LASYNC_PROPERTY_SEEDS")) or 40

local function ticks(n)
  for _ = 1, n or 1 do lasync.sleep(0) end
end

-- Sleeps 0..2 iterations at random: a fresh await point with a random phase.
local function jitter(rnd)
  local n = rnd(0, 2)
  for _ = 1, n do lasync.sleep(0) end
end

-- Runs `chaos_rounds` rounds in which a random live task of `pool` is cancelled at a random
-- moment; `respawn(i)` replaces a finished task so that the work goes on. Then cancels
-- everything and waits for every task to finish.
local function chaos(rnd, pool, respawn, rounds, hook)
  for _ = 1, rounds do
    ticks(rnd(0, 3))
    local i = rnd(1, #pool)
    if hook then hook(rnd) end
    if rnd() < 0.5 then pool[i]:cancel() end
    for j = 1, #pool do
      if pool[j]:done() then pool[j] = respawn(j) end
    end
  end
  for j = 1, #pool do pool[j]:cancel() end
  for j = 1, #pool do
    local ok, e = pcall(pool[j].await, pool[j])
    assert(ok or lasync.is_cancelled(e), tostring(e))
  end
end

local function check_queue(seed, maxsize)
  local rnd = math.random
  math.randomseed(seed)
  local q = lasync.Queue(maxsize)
  local put_ok, got = {}, {}
  local next_id = 0
  local function producer()
    return lasync.spawn(function()
      while true do
        next_id = next_id + 1
        local id = next_id
        q:put(id)
        put_ok[id] = true             -- no await between put() returning and this line
        jitter(rnd)
      end
    end)
  end
  local function consumer()
    return lasync.spawn(function()
      while true do
        local v = q:get()
        got[v] = (got[v] or 0) + 1
        q:task_done()
        jitter(rnd)
      end
    end)
  end
  local pool = {}
  for i = 1, 6 do pool[i] = (i % 2 == 0) and producer() or consumer() end
  local function respawn(j) return (j % 2 == 0) and producer() or consumer() end
  -- The hook hands an item over and cancels a consumer in the same iteration.
  local function hook(r)
    if r() < 0.3 then
      next_id = next_id + 1
      local id = next_id
      if q:put_nowait(id) then put_ok[id] = true end
    end
  end
  chaos(rnd, pool, respawn, 150, hook)
  local left = {}
  while not q:empty() do
    local v = q:get_nowait()
    left[v] = (left[v] or 0) + 1
    q:task_done()
  end
  local where = "seed " .. seed .. ", maxsize " .. tostring(maxsize)
  for id = 1, next_id do
    local n = (got[id] or 0) + (left[id] or 0)
    if put_ok[id] then
      assert(n == 1, where .. ": item " .. id .. " seen " .. n .. " times")
    else
      assert(n == 0, where .. ": item " .. id .. " whose put() raised was delivered")
    end
  end
  assert.equals(0, q:qsize())
  assert.equals(0, q._reserved, where .. ": a free slot leaked")
  lasync.wait_for(function() q:join() end, 1)  -- every task_done accounted for
end

describe("cancellation at random points", function()
  it("loses no queue item (unbounded)", async({timeout = 60}, function()
    for seed = 1, SEEDS do check_queue(seed, nil) end
  end))

  it("loses no queue item or slot (bounded)", async({timeout = 60}, function()
    for seed = 1, SEEDS do check_queue(seed, 1 + seed % 3) end
  end))

  local function check_permits(seed, make, limit)
    local rnd = math.random
    math.randomseed(seed)
    local prim = make()
    local inside, peak = 0, 0
    local function worker()
      return lasync.spawn(function()
        while true do
          do
            local g <close> = prim:acquire()
            inside = inside + 1
            peak = math.max(peak, inside)
            local leave <close> = setmetatable({}, {__close = function() inside = inside - 1 end})
            jitter(rnd)
          end
          jitter(rnd)
        end
      end)
    end
    local pool = {}
    for i = 1, 6 do pool[i] = worker() end
    chaos(rnd, pool, worker, 150)
    assert.equals(0, inside)
    assert(peak <= limit, "seed " .. seed .. ": " .. peak .. " holders at once")
    return prim
  end

  it("leaks no semaphore permit", async({timeout = 60}, function()
    for seed = 1, SEEDS do
      local sem = check_permits(seed, function() return lasync.Semaphore(2) end, 2)
      assert.equals(2, sem:value(), "seed " .. seed .. ": permits leaked")
      -- And the semaphore still works FIFO for newcomers.
      local a, b = sem:acquire(), sem:acquire()
      assert.is_true(sem:locked())
      a:release(); b:release()
    end
  end))

  it("leaks no lock", async({timeout = 60}, function()
    for seed = 1, SEEDS do
      local lock = check_permits(seed, lasync.Lock, 1)
      assert.is_false(lock:locked(), "seed " .. seed .. ": lock left locked")
    end
  end))

  it("loses no condition notification or item", async({timeout = 60}, function()
    for seed = 1, SEEDS do
      local rnd = math.random
      math.randomseed(seed)
      local cond = lasync.Condition()
      local items, put_ok, got = {}, {}, {}
      local next_id = 0
      local function producer()
        return lasync.spawn(function()
          while true do
            jitter(rnd)
            local g <close> = cond:acquire()
            next_id = next_id + 1
            items[#items + 1] = next_id
            put_ok[next_id] = true
            cond:notify()
          end
        end)
      end
      local function consumer()
        return lasync.spawn(function()
          while true do
            local g <close> = cond:acquire()
            cond:wait_for(function() return #items > 0 end)
            local id = table.remove(items, 1)
            got[id] = (got[id] or 0) + 1
            g:release()
            jitter(rnd)
          end
        end)
      end
      local pool = {}
      for i = 1, 6 do pool[i] = (i % 3 == 0) and producer() or consumer() end
      chaos(rnd, pool, function(j) return (j % 3 == 0) and producer() or consumer() end, 100)
      assert.is_false(cond:locked())
      for _, id in ipairs(items) do got[id] = (got[id] or 0) + 1 end
      for id = 1, next_id do
        assert(put_ok[id] and got[id] == 1, "seed " .. seed .. ": item " .. id)
      end
      -- No lost wake-up: three waiters and three notifications, the first waiter cancelled in
      -- the iteration it is notified; whichever way that race goes, every waiter finishes.
      items = {}
      local woken = 0
      local ws = {}
      for i = 1, 3 do
        ws[i] = lasync.spawn(function()
          local g <close> = cond:acquire()
          cond:wait()
          woken = woken + 1
        end)
      end
      ticks(2)
      do
        local g <close> = cond:acquire()
        cond:notify(1)
        ws[1]:cancel()               -- notified and cancelled in the same iteration
      end
      ticks(4)
      do
        local g <close> = cond:acquire()
        cond:notify(2)
      end
      local done = lasync.wait(ws, {timeout = 1})
      assert.equals(3, #done, "seed " .. seed .. ": a waiter is stuck")
      assert.is_true(woken >= 2)
    end
  end))

  it("an Event waiter cancelled at any point leaves the others intact", async(function()
    for seed = 1, SEEDS do
      math.randomseed(seed)
      local ev = lasync.Event()
      local ws = {}
      for i = 1, 10 do ws[i] = lasync.spawn(function() jitter(math.random); return ev:wait() end) end
      ticks(math.random(0, 3))
      for i = 1, 10 do if math.random() < 0.3 then ws[i]:cancel() end end
      if math.random() < 0.5 then ev:set() end
      ticks(math.random(0, 2))
      ev:set()
      for i = 1, 10 do
        local ok, v = pcall(ws[i].await, ws[i])
        assert(ok and v == true or lasync.is_cancelled(v))
      end
    end
  end))
  it("combinators cancelled at random points leave no task or timer behind",
    async({timeout = 60}, function()
      local rnd = math.random
      local function leaf(v)
        return function()
          for _ = 1, rnd(0, 3) do lasync.sleep(0) end
          if rnd() < 0.2 then lasync.sleep(0.001 * rnd(1, 3)) end
          if rnd() < 0.1 then error({message = "leaf failed"}) end
          return v
        end
      end
      -- Cancels the tasks and waits until they have all finished, even through a
      -- cancellation of the caller (returned, for the caller to re-raise).
      local function cleanup(ts)
        local cancel_err
        for _, t in ipairs(ts) do t:cancel() end
        for _, t in ipairs(ts) do
          while not t:done() do
            local ok, e = pcall(lasync.wait, {t})
            if not ok then cancel_err = e end
          end
          pcall(t.result, t)
        end
        return cancel_err
      end
      local shapes = {
        function() return lasync.gather(leaf(1), leaf(2), leaf(3)) end,
        function() return lasync.wait_for(leaf(1), 0.002) end,
        function() return lasync.timeout(0.002, function() return lasync.gather(leaf(1), leaf(2)) end) end,
        function()
          return lasync.task_group(function(tg)
            tg:spawn(leaf(1)); tg:spawn(leaf(2))
            return lasync.wait_for(leaf(3), 0.003)
          end)
        end,
        function()
          -- wait() never cancels: the caller cleans up its tasks, also when cancelled.
          local ts = {lasync.spawn(leaf(1)), lasync.spawn(leaf(2))}
          local ok, done = pcall(lasync.wait, ts, {timeout = 0.002})
          local cancel_err = cleanup(ts)
          if not ok then error(done, 0) end
          if cancel_err then error(cancel_err, 0) end
          return #done
        end,
        function()
          local fs = {leaf(1), leaf(2)}
          local ts = {}
          for i, f in ipairs(fs) do ts[i] = lasync.spawn(f) end
          local ok, e = pcall(function()
            for f in lasync.as_completed(ts, 0.002) do pcall(f.result, f) end
          end)
          local cancel_err = cleanup(ts)
          if not ok then error(e, 0) end
          if cancel_err then error(cancel_err, 0) end
          return 2
        end,
      }
      local base_tasks, base_timers = lasync.get_loop():stats()
      for seed = 1, SEEDS * 3 do
        math.randomseed(seed)
        local shape = shapes[rnd(1, #shapes)]
        local t = lasync.spawn(shape)
        ticks(rnd(0, 6))
        if rnd() < 0.3 then lasync.sleep(0.001) end
        t:cancel()
        local ok, e = pcall(t.await, t)
        assert(ok or lasync.is_cancelled(e) or lasync.is_timeout(e)
          or (type(e) == "table" and e.message == "leaf failed"),
          "seed " .. seed .. ": " .. tostring(e))
        local tasks, timers = lasync.get_loop():stats()
        assert(tasks == base_tasks and timers == base_timers,
          ("seed %d: %d task(s), %d timer(s) left"):format(seed, tasks - base_tasks,
            timers - base_timers))
      end
    end))
end)
