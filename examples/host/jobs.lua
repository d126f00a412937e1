-- The script the host runs: submit jobs, do other work while the workers compute, await
-- the results (in submission order, whatever order the workers finish in).
local lasync = require "lasync"

lasync.run(function()
  local futures = {}
  for i = 1, 8 do futures[i] = jobs.submit(i * 1000) end
  local ticks = 0
  local ticker = lasync.spawn(function()
    while true do lasync.sleep(0.001); ticks = ticks + 1 end
  end)
  for i, fut in ipairs(futures) do
    local n, sum = fut:await()
    print(("job %d: sum of squares up to %d = %d"):format(i, n, sum))
  end
  ticker:cancel()
  -- The loop kept running while the workers computed.
  print(ticks > 0 and "the loop kept ticking meanwhile" or "the loop was blocked!")
end)
