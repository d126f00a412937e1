-- A blocking call on the libuv thread pool: zlib compresses a large buffer with
-- compress2() while another task keeps ticking on the loop.
--   lua5.4 examples/ffi/zlib_thread.lua [megabytes]
local lasync = require "lasync"
local ffi = require "lasync.ffi"

ffi.cdef [[
typedef unsigned long uLong;
typedef uLong uLongf;
uLong compressBound(uLong sourceLen);
int compress2(uint8_t *dest, uLongf *destLen, const uint8_t *source, uLong sourceLen, int level);
int uncompress(uint8_t *dest, uLongf *destLen, const uint8_t *source, uLong sourceLen);
]]
local z = ffi.load("z")

lasync.run(function(mb)
  local n = math.floor((tonumber(mb) or 32) * 1024 * 1024)
  local src = ffi.new("uint8_t[?]", n)
  for i = 0, n - 1, 4096 do src[i] = i % 251 end  -- compressible, not trivial
  local cap = z.compressBound(n)
  local dst = ffi.new("uint8_t[?]", cap)
  local len = ffi.new("uLongf[1]", cap)

  local ticks = 0
  local ticker = lasync.spawn(function() while true do ticks = ticks + 1; lasync.sleep(0.002) end end)
  local t0 = lasync.get_loop():time()
  -- src, dst and len stay referenced by this call until compress2 returns
  local rc = z.compress2:to_thread(dst, len, src, n, 9)
  local dt = lasync.get_loop():time() - t0
  ticker:cancel()
  assert(rc == 0, "compress2 failed: " .. rc)

  local back = ffi.new("uint8_t[?]", n)
  local blen = ffi.new("uLongf[1]", n)
  assert(ffi.to_thread(z.uncompress, back, blen, dst, len[0]) == 0)
  assert(blen[0] == n and back[4096] == src[4096])
  print(("compressed %d MiB to %d bytes in %.2f s on the thread pool"):format(n >> 20, len[0], dt))
  print("round trip ok; the loop ticked meanwhile: " .. (ticks >= 5 and "yes" or "no"))
end, ...)
