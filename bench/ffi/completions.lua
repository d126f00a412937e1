-- Completions fired from 4 foreign threads and handled on the loop thread:
--   callbacks: every completion runs a Lua callback on the loop thread;
--   oneshots:  every completion resolves a pre-armed ffi.oneshot future that one of 64
--              tasks is awaiting (arming is not timed: it is measured as "arm"). Each
--              firing thread walks its own quarter of the array, so the tasks await the
--              futures in the order they complete (one from each quarter in turn):
--              completions find a task suspended on them instead of landing on futures
--              nobody awaits yet, and an awaited future is dropped as a real consumer would;
--   round-trip: ffi.awaitable over a worker pool of 4 threads in the fixture library,
--              256 tasks each submitting, awaiting and submitting again.
-- Prints "name completions_per_second".   lua5.4 bench/ffi/completions.lua BUILD [N]
local build, N = arg[1] or "build", tonumber(arg[2]) or 1000000
package.cpath = build .. "/lua/?.so;" .. package.cpath
local lasync = require "lasync"
local ffi = require "lasync.ffi"
ffi.cdef [[
typedef void (*fx_done_cb)(void *ud, int value, const char *msg);
int fx_spam(int nthreads, int per_thread, void (*cb)(void *, int), void *ud);
void fx_spam_join(void);
void fx_pool_start(int n);
void fx_pool_stop(void);
int fx_pool_submit(int value, fx_done_cb cb, void *ud);
void fx_fire_all(fx_done_cb *cbs, int n, int nthreads);
]]
local C = ffi.load(build .. "/tests/fixtures/liblasync_ffi_fixture.so")

lasync.run(function()
  local loop = lasync.get_loop()
  -- 1. void callbacks
  local n, done = 0, lasync.future()
  local cb = ffi.cast("void (*)(void *, int)", function()
    n = n + 1
    if n == N then done:set_result() end
  end)
  local hold <close> = ffi.hold()
  local t0 = loop:time()
  C.fx_spam(4, N // 4, cb, nil)
  done:await()
  local dt = loop:time() - t0
  C.fx_spam_join()
  cb:free()
  hold:release()
  print(("callbacks %.0f"):format(N / dt))

  -- 2. pre-armed one-shots fired by 4 threads, awaited by 64 tasks
  local K = N // 4 // 4 * 4
  local arr = ffi.new("fx_done_cb[?]", K)
  local futs = {}
  t0 = loop:time()
  for i = 1, K do
    local p, f = ffi.oneshot("fx_done_cb")
    arr[i - 1] = p
    futs[i] = f
  end
  print(("arm %.0f"):format(K / (loop:time() - t0)))
  t0 = loop:time()
  local firing = lasync.spawn(ffi.to_thread, C.fx_fire_all, arr, K, 4)
  local waiters = {}
  local Q = K // 4  -- fx_fire_all gives thread q the indices [q*Q, (q+1)*Q)
  for k = 1, 64 do
    waiters[k] = lasync.spawn(function()
      for s = k - 1, K - 1, 64 do
        local i = (s % 4) * Q + s // 4 + 1
        futs[i]:await()
        futs[i] = false
      end
    end)
  end
  for k = 1, 64 do waiters[k]:await() end
  dt = loop:time() - t0
  firing:await()
  print(("oneshots %.0f"):format(K / dt))
  futs, arr = nil, nil

  -- 3. awaited one-shot operations, 256 tasks in flight
  C.fx_pool_start(4)
  local submit = ffi.awaitable(C.fx_pool_submit)
  local M, K = N // 4, 256
  local left = M
  t0 = loop:time()
  local tasks = {}
  for k = 1, K do
    tasks[k] = lasync.spawn(function()
      while left > 0 do
        left = left - 1
        submit(k, nil)
      end
    end)
  end
  for k = 1, K do tasks[k]:await() end
  dt = loop:time() - t0
  C.fx_pool_stop()
  print(("round-trip %.0f"):format(M / dt))
end)
