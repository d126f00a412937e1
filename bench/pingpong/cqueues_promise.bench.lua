-- cqueues variant (informational): cqueues.promise (value + condition variable) as the
-- future: promise.new() pending, :set(true, v) resolves, :get() waits.
local cqueues = require "cqueues"
local promise = require "cqueues.promise"
local N = tonumber(arg[1]) or 200000

local cq = cqueues.new()
cq:wrap(function()
  local ping = promise.new()
  local finished = promise.new()
  cq:wrap(function(ping)
    for _ = 1, N do
      local pong = ping:get()
      ping = promise.new()
      pong:set(true, ping)
    end
    finished:set(true)
  end, ping)
  local t0 = cqueues.monotime()
  for _ = 1, N do
    local pong = promise.new()
    ping:set(true, pong)
    ping = pong:get()
  end
  local dt = cqueues.monotime() - t0
  finished:get()
  print(string.format("RESULT %d %.6f", N, dt))
end)
assert(cq:loop())
