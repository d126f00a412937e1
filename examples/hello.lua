-- runner: lasync
-- Run with the lasync runner: the script is the main task, so it can await at top level.
--   build/bin/lasync examples/hello.lua world
local lasync = require "lasync"
local who = ... or "world"
local greeter = lasync.spawn(function(name)
  lasync.sleep(0.01)
  return "hello, " .. name
end, who)
print(greeter:await())
