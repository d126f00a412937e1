-- Seed 004's asyncq.py, ported to lasync: producers put items (a random hex string and the
-- time it was made) into a Queue at random moments; consumers take them greedily. main()
-- waits for the producers, then q:join() waits until every item has been processed, then
-- cancels the consumers, which would otherwise wait forever for more items.
-- Randomness is seeded, so stdout is the same on every run (the time an item spent in the
-- queue is shown to a tenth of a second); the total run time goes to stderr.
-- Run: lua5.4 examples/asyncq.lua [-p NPROD] [-c NCON]     (default: -p 2 -c 5, the seed's run)
local lasync = require "lasync"

-- Sleeps `secs` seconds, waking on the program's whole-second grid: tasks due in the same
-- second then wake in the order they went to sleep, so the output is the same on every run
-- (with a plain lasync.sleep(secs), two tasks due at the same second could wake in either
-- order, by a few microseconds of scheduling jitter).
local T0
local function sleep(secs)
  local loop = lasync.get_loop()
  T0 = T0 or loop:time()
  local due = T0 + math.floor(loop:time() - T0 + 0.5) + secs
  local fut = lasync.future()
  local h = loop:call_at(due, function() fut:set_result() end)
  local ok, err = pcall(fut.await, fut)
  if not ok then
    h:cancel()
    error(err, 0)
  end
end

local function now() return lasync.get_loop():time() end

local function makeitem(size)
  local t = {}
  for i = 1, size or 5 do t[i] = ("%02x"):format(math.random(0, 255)) end
  return table.concat(t)
end

local function randsleep(caller)
  local i = math.random(0, 10)
  if caller then print(("%s sleeping for %d seconds."):format(caller, i)) end
  sleep(i)
end

local function produce(name, q)
  local n = math.random(0, 10)
  for _ = 1, n do
    randsleep("Producer " .. name)
    local i = makeitem()
    local t = now()
    q:put({i, t})
    print(("Producer %d added <%s> to queue."):format(name, i))
  end
end

local function consume(name, q)
  while true do
    randsleep("Consumer " .. name)
    local item = q:get()
    local i, t = item[1], item[2]
    print(("Consumer %d got element <%s> in %0.1f seconds."):format(name, i, now() - t))
    q:task_done()
  end
end

local function main(nprod, ncon)
  local q = lasync.Queue()
  local producers, consumers = {}, {}
  for n = 0, nprod - 1 do producers[#producers + 1] = lasync.spawn(produce, n, q) end
  for n = 0, ncon - 1 do consumers[#consumers + 1] = lasync.spawn(consume, n, q) end
  lasync.gather(table.unpack(producers))
  q:join()                       -- implicitly awaits the consumers, too
  for _, c in ipairs(consumers) do c:cancel() end
  if #consumers > 0 then lasync.wait(consumers) end -- let them finish their cancellation
end

local opts = {p = 2, c = 5}
local i = 1
while i <= #arg do
  local flag = arg[i]:match("^%-%-?(%a+)$")
  local key = ({p = "p", nprod = "p", c = "c", ncon = "c"})[flag or ""]
  local v = math.tointeger(tonumber(arg[i + 1] or ""))
  if not key or not v then error("usage: asyncq.lua [-p NPROD] [-c NCON]", 0) end
  opts[key] = v
  i = i + 2
end

math.randomseed(444)
lasync.run(function()
  local start = now()
  main(opts.p, opts.c)
  io.stderr:write(("Program completed in %0.5f seconds.\n"):format(now() - start))
end)
