-- cqueues variant (informational): a promise is cqueues' spawn+join (promise.new wraps fn in a new coroutine on
-- the running controller; :get() waits on its condition variable).
local cqueues = require "cqueues"
local promise = require "cqueues.promise"
local N = tonumber(arg[1]) or 200000

local cq = cqueues.new()
cq:wrap(function()
  local t0 = cqueues.monotime()
  for _ = 1, N do
    promise.new(function() cqueues.sleep(0) end):get()
  end
  local dt = cqueues.monotime() - t0
  print(string.format("RESULT %d %.6f", N, dt))
end)
assert(cq:loop())
