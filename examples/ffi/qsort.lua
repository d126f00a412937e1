-- A synchronous callback: libc's qsort with a Lua comparator.
--   lua5.4 examples/ffi/qsort.lua     (with LUA_CPATH pointing at the build's lua/ dir)
local ffi = require "lasync.ffi"

ffi.cdef [[
void qsort(void *base, size_t nmemb, size_t size, int (*compar)(const void *, const void *));
]]

local words = { "pear", "apple", "fig", "banana", "cherry" }
local n = #words
local arr = ffi.new("const char *[?]", n)
for i = 1, n do arr[i - 1] = words[i] end  -- the Lua strings stay alive in `words`

local cmp = ffi.cast("int (*)(const void *, const void *)", function(a, b)
  local x = ffi.string(ffi.cast("const char **", a)[0])
  local y = ffi.string(ffi.cast("const char **", b)[0])
  return x < y and -1 or x > y and 1 or 0
end)
ffi.C.qsort(arr, n, ffi.sizeof("const char *"), cmp)
cmp:free()

local out = {}
for i = 0, n - 1 do out[#out + 1] = ffi.string(arr[i]) end
print(table.concat(out, " "))

-- numbers, with a comparator passed inline (it lives for the duration of the call)
local nums = ffi.new("double[6]", { 3.5, -1, 2, 10, 0.25, 7 })
ffi.C.qsort(nums, 6, ffi.sizeof("double"), function(a, b)
  local x, y = ffi.cast("const double *", a)[0], ffi.cast("const double *", b)[0]
  return x < y and -1 or x > y and 1 or 0
end)
local s = {}
for i = 0, 5 do s[#s + 1] = tostring(nums[i]) end
print(table.concat(s, " "))
