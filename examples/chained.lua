-- Seed 004's chained.py, ported to lasync: each chain(n) awaits part1(n) and then part2(n)
-- with part1's result; the chains run concurrently under gather(), so the program takes as
-- long as the longest chain, not the sum. Randomness is seeded (same output on every run);
-- the total run time goes to stderr.
-- Run: lua5.4 examples/chained.lua [n ...]     (default: 1 2 3)
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

local function part1(n)
  local i = math.random(0, 10)
  print(("part1(%d) sleeping for %d seconds."):format(n, i))
  sleep(i)
  local result = ("result%d-1"):format(n)
  print(("Returning part1(%d) == %s."):format(n, result))
  return result
end

local function part2(n, arg)
  local i = math.random(0, 10)
  print(("part2(%d, '%s') sleeping for %d seconds."):format(n, arg, i))
  sleep(i)
  local result = ("result%d-2 derived from %s"):format(n, arg)
  print(("Returning part2(%d, '%s') == %s."):format(n, arg, result))
  return result
end

local function chain(n)
  local start = now()
  local p1 = part1(n)
  local p2 = part2(n, p1)
  print(("-->Chained result%d => %s (took %0.1f seconds)."):format(n, p2, now() - start))
end

local function main(...)
  local jobs = {}
  for _, n in ipairs({...}) do jobs[#jobs + 1] = function() return chain(n) end end
  lasync.gather(table.unpack(jobs))
end

math.randomseed(444)
local args = {}
for i = 1, #arg do args[i] = math.tointeger(tonumber(arg[i])) or error("not an integer: " .. arg[i]) end
if #args == 0 then args = {1, 2, 3} end
lasync.run(function()
  local start = now()
  main(table.unpack(args))
  io.stderr:write(("Program finished in %0.2f seconds.\n"):format(now() - start))
end)
