-- Seed 004's rand.py, ported to lasync: three makerandom() calls run concurrently under
-- gather(); each keeps drawing random integers in [0, 10] until one beats its threshold,
-- sleeping idx + 1 seconds between tries. The randomness is seeded, so the output is the
-- same on every run; the run time goes to stderr.
-- Run: lua5.4 examples/rand.lua
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

-- ANSI colours: end of colour, cyan, red, magenta.
local c = {"\27[0m", "\27[36m", "\27[91m", "\27[35m"}

local function makerandom(idx, threshold)
  threshold = threshold or 6
  local col = c[idx + 2]
  print(col .. ("Initiated makerandom(%d)."):format(idx))
  local i = math.random(0, 10)
  while i <= threshold do
    print(col .. ("makerandom(%d) == %d too low; retrying."):format(idx, i))
    sleep(idx + 1)
    i = math.random(0, 10)
  end
  print(col .. ("---> Finished: makerandom(%d) == %d"):format(idx, i) .. c[1])
  return i
end

local function main()
  local loop = lasync.get_loop()
  local t0 = loop:time()
  local jobs = {}
  for i = 0, 2 do jobs[#jobs + 1] = function() return makerandom(i, 10 - i - 1) end end
  local r = table.pack(lasync.gather(table.unpack(jobs)))
  io.stderr:write(("rand.lua executed in %0.2f seconds.\n"):format(loop:time() - t0))
  return table.unpack(r, 1, r.n)
end

math.randomseed(444)
local r1, r2, r3 = lasync.run(main)
print()
print(("r1: %d, r2: %d, r3: %d"):format(r1, r2, r3))
