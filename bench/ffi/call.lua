-- Call overhead of `int add(int, int)`: the FFI bridge, a hand-written lua_CFunction, and
-- (run with luajit) LuaJIT's FFI. Prints "name ns_per_call".
--   lua5.4 bench/ffi/call.lua BUILD [N]     luajit bench/ffi/call.lua BUILD [N]
local build, N = arg[1] or "build", tonumber(arg[2]) or 5000000
local fixture = build .. "/tests/fixtures/liblasync_ffi_fixture.so"

local function time(f)
  local best = math.huge
  for _ = 1, 3 do
    local t0 = os.clock()
    f()
    local dt = os.clock() - t0
    if dt < best then best = dt end
  end
  return best / N * 1e9
end

local function loop_with(add)
  return function()
    local s = 0
    for i = 1, N do s = add(s, 1) end
    assert(s == N)
  end
end

if jit then
  local ffi = require "ffi"
  ffi.cdef "int fx_add(int a, int b);"
  local C = ffi.load(fixture)
  print(("luajit-ffi %.1f"):format(time(loop_with(C.fx_add))))
  return
end

package.cpath = build .. "/bench/ffi/?.so;" .. build .. "/lua/?.so;" .. package.cpath
local hand = require "handadd"
local ffi = require "lasync.ffi"
ffi.cdef "int fx_add(int a, int b);"
local C = ffi.load(fixture)
print(("lua-loop %.1f"):format(time(loop_with(function(a, b) return a + b end))))
print(("hand-binding %.1f"):format(time(loop_with(hand))))
print(("lasync-ffi %.1f"):format(time(loop_with(C.fx_add))))
