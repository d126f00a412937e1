-- The script lasync-uvhost loads into its own libuv loop (lasync_attach): no lasync.run;
-- the host's uv_run drives these tasks, and the host's timer calls on_reading.
local lasync = require "lasync"

local readings = lasync.Queue()

-- Called by the host from its timer callback: plain Lua, not a task, so it must not wait.
function on_reading(n)
  readings:put_nowait(n)
end

lasync.spawn(function()
  local count, total = 0, 0
  local report <close> = setmetatable({}, { __close = function()
    print(("consumer stopped by the host after %d readings, total %d"):format(count, total))
  end })
  while true do
    local n = readings:get()
    lasync.sleep(0.001) -- asynchronous work on each reading
    count, total = count + 1, total + n
    if count % 5 == 0 then print(("%d readings so far, total %d"):format(count, total)) end
  end
end)
