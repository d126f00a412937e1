/* test-attach.c - lasync on a libuv loop the host runs itself (lasync_attach/lasync_detach):
 * tasks, timers and C futures resolved from threads make progress inside the host's uv_run
 * next to the host's own handles; detaching cancels what is left and lets the cleanup run;
 * misuse gets an error code. Runs under the sanitizers with the rest of the suite. */
#include "embed.h"

/* host.detach() -> what lasync_detach says when a script calls it (from a task, say). */
static int l_detach(lua_State *L) {
  lua_pushinteger(L, lasync_detach(L, 0));
  return 1;
}

static lua_State *new_state(void) {
  static const luaL_Reg host[] = {{"threaded", l_threaded}, {"detach", l_detach}, {NULL, NULL}};
  return embed_state(host);
}

static lua_Integer global_int(lua_State *L, const char *name) {
  lua_getglobal(L, name);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *global_str(lua_State *L, const char *name) {
  lua_getglobal(L, name);
  const char *s = lua_tostring(L, -1); /* kept alive by the global */
  lua_pop(L, 1);
  return s ? s : "(nil)";
}

/* The host's own handle: a timer ticking every millisecond until it has seen `stop_at`. */
static int ticks;
static void tick_cb(uv_timer_t *t) {
  lua_State *L = t->data;
  ticks++;
  if (global_int(L, "finished") == 2) uv_timer_stop(t);
}

/* Detaches, running the host's loop while the cancelled tasks clean up. */
static void detach_all(lua_State *L, uv_loop_t *uv) {
  int rc, rounds = 0;
  while ((rc = lasync_detach(L, 0)) == LAS_EBUSY) {
    uv_run(uv, UV_RUN_ONCE);
    CHECK(++rounds < 10000);
  }
  CHECK(rc == 0);
}

/* A script cannot tear the host's attachment down by closing the Loop object (it is the
 * host's to end with lasync_detach): `<close>` on lasync.get_loop() leaves lasync attached. */
static void test_script_closes_loop(void) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, &uv) == 0);
  run(L, "local lasync = require 'lasync'\n"
         "pcall(function() local loop <close> = lasync.get_loop() end)\n");
  CHECK(lasync_getloop(L) != NULL);
  CHECK(lasync_detach(L, 0) == 0);
  lua_close(L);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&uv) == 0);
}

/* A task that swallows its cancellation and then waits for something nothing can complete:
 * no lasync work (callbacks, timers, holds) can ever wake it, and uv_run(UV_RUN_ONCE)
 * returns at once, so a host following the documented loop (detach until not EBUSY) must
 * not spin forever. As at the end of lasync.run, such a task is reported and dropped. */
static void test_detach_unwakeable_task(void) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, &uv) == 0);
  run(L, "local lasync = require 'lasync'\n"
         "reported = ''\n"
         "lasync.get_loop():set_exception_handler(function(_, ctx)\n"
         "  reported = reported .. tostring(ctx.error or ctx.message) .. ';'\n"
         "end)\n"
         "lasync.spawn(function()\n"
         "  local f = lasync.future()\n"
         "  pcall(f.await, f)\n"
         "  lasync.future():await()\n"
         "end)\n");
  uv_run(&uv, UV_RUN_NOWAIT);
  int rc, rounds = 0;
  while ((rc = lasync_detach(L, 0)) == LAS_EBUSY && ++rounds < 1000) uv_run(&uv, UV_RUN_ONCE);
  CHECK(rc == 0);
  CHECK(strstr(global_str(L, "reported"), "destroyed but it is pending") != NULL);
  lua_close(L);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&uv) == 0);
}

/* Loads lasync.ffi (built next to the test, in ../lua) as the global `ffi`; false when the
 * FFI is not built. */
static int load_ffi(lua_State *L, const char *argv0) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", argv0);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0'; else snprintf(dir, sizeof dir, ".");
  lua_pushfstring(L, "%s/../lua/?.so;", dir);
  lua_setglobal(L, "ffi_cpath");
  run(L, "package.cpath = ffi_cpath .. package.cpath\n"
         "has_ffi, ffi = pcall(require, 'lasync.ffi')\n"
         "if has_ffi then ffi.cdef 'int usleep(unsigned int usec);' end\n");
  lua_getglobal(L, "has_ffi");
  int has = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!has) printf("skipped: lasync.ffi not found\n");
  return has;
}

/* lua_close while attached, with an ffi.to_thread call still running on the thread pool:
 * the host keeps running its uv loop, which completes the work request after the state is
 * gone. Neither the worker nor the completion may touch the closed state's memory. */
static void test_close_with_thread_work(const char *argv0) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, &uv) == 0);
  if (load_ffi(L, argv0)) {
    run(L, "local lasync = require 'lasync'\n"
           "lasync.spawn(function() ffi.to_thread(ffi.C.usleep, 50000) end)\n");
    uv_run(&uv, UV_RUN_NOWAIT); /* the task queues the call on the pool */
  }
  lua_close(L);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0); /* the work request completes */
  CHECK(uv_loop_close(&uv) == 0);
}

/* Detaching while an ffi.to_thread call runs says LAS_EBUSY until the call has returned
 * (its completion comes in the host's uv_run): once detach returns 0, nothing of lasync's
 * is left on the host's loop, which closes after one more iteration. */
static void test_detach_waits_for_thread_work(const char *argv0) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, &uv) == 0);
  if (load_ffi(L, argv0)) {
    run(L, "local lasync = require 'lasync'\n"
           "reported = ''\n"
           "lasync.get_loop():set_exception_handler(function(_, ctx)\n"
           "  reported = reported .. tostring(ctx.error or ctx.message) .. ';'\n"
           "end)\n"
           "t = lasync.spawn(function() ffi.to_thread(ffi.C.usleep, 100000) end)\n");
    uv_run(&uv, UV_RUN_NOWAIT); /* the task queues the call on the pool */
    CHECK(lasync_detach(L, 0) == LAS_EBUSY);
    detach_all(L, &uv);
    CHECK(strcmp(global_str(L, "reported"), "") == 0);
    run(L, "assert(t:cancelled())");
  }
  uv_run(&uv, UV_RUN_NOWAIT); /* lasync's handles finish closing */
  CHECK(uv_loop_close(&uv) == 0);
  lua_close(L);
}

/* Detach (force) while an ffi.to_thread call runs, attach again and let the FFI bind to the
 * new loop (the old loop's memory goes once its handles closed): the work request that
 * completes afterwards must not give its hold back to the freed old loop. */
static void test_thread_work_across_reattach(const char *argv0) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, &uv) == 0);
  if (load_ffi(L, argv0)) {
    run(L, "local lasync = require 'lasync'\n"
           "lasync.get_loop():set_exception_handler(function(_, ctx)\n"
           "  reported = (reported or '') .. ctx.message .. ';'\n"
           "end)\n"
           "lasync.spawn(function() ffi.to_thread(ffi.C.usleep, 50000) end)\n");
    uv_run(&uv, UV_RUN_NOWAIT);
    CHECK(lasync_detach(L, 1) == 0);
    CHECK(strstr(global_str(L, "reported"), "call on the thread pool was still running") != NULL);
    uv_run(&uv, UV_RUN_NOWAIT); /* lasync's handles finish closing */
    CHECK(lasync_attach(L, &uv) == 0);
    run(L, "ffi.hold():release()\n"); /* binds the FFI to the new loop */
    uv_run(&uv, UV_RUN_DEFAULT);      /* the work request completes */
  }
  CHECK(lasync_detach(L, 0) == 0);
  lua_close(L);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&uv) == 0);
}

/* With an argument, only the scenario of that name runs (each aborts on failure). */
static int want(int argc, char **argv, const char *name) {
  return argc < 2 || strcmp(argv[1], name) == 0;
}

static void test_basics(void);

int main(int argc, char **argv) {
  if (want(argc, argv, "basics")) test_basics();
  if (want(argc, argv, "script_closes_loop")) test_script_closes_loop();
  if (want(argc, argv, "detach_unwakeable")) test_detach_unwakeable_task();
  if (want(argc, argv, "close_with_thread_work")) test_close_with_thread_work(argv[0]);
  if (want(argc, argv, "detach_waits_for_thread_work")) test_detach_waits_for_thread_work(argv[0]);
  if (want(argc, argv, "thread_work_across_reattach")) test_thread_work_across_reattach(argv[0]);
  printf("ok\n");
  return 0;
}

static void test_basics(void) {
  uv_loop_t uv;
  CHECK(uv_loop_init(&uv) == 0);
  lua_State *L = new_state();
  CHECK(lasync_attach(L, NULL) == LAS_EINVAL);
  CHECK(lasync_detach(L, 0) == LAS_EINVAL); /* not attached */
  CHECK(lasync_attach(L, &uv) == 0);
  CHECK(lasync_attach(L, &uv) == LAS_ERUNNING);
  CHECK(lasync_getloop(L) != NULL);

  /* Tasks spawned from a script the host runs make progress in the host's uv_run, next to
   * the host's timer: a C future from a thread, sleeps, call_later. */
  run(L, "local lasync = require 'lasync'\n"
         "finished, order = 0, ''\n"
         "lasync.get_loop():set_exception_handler(function(_, ctx)\n"
         "  reported = (reported or '') .. tostring(ctx.error or ctx.message) .. ';'\n"
         "end)\n"
         "lasync.spawn(function()\n"
         "  local s, n = host.threaded():await()\n"
         "  got = s .. ' ' .. n\n"
         "  finished = finished + 1\n"
         "end)\n"
         "lasync.spawn(function()\n"
         "  lasync.sleep(0.01)\n"
         "  local f = lasync.future()\n"
         "  lasync.get_loop():call_later(0.005, function() order = order .. 'later;'; f:set_result('timer') end)\n"
         "  local v = f:await()\n"
         "  order = order .. v .. ';'\n"
         "  finished = finished + 1\n"
         "end)\n"
         "local ok, e = pcall(lasync.run, function() end)\n"
         "assert(not ok and e:find('attached to its host', 1, true), e)\n");
  uv_timer_t timer;
  uv_timer_init(&uv, &timer);
  timer.data = L;
  uv_timer_start(&timer, tick_cb, 1, 1);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0);
  CHECK(global_int(L, "finished") == 2);
  CHECK(strcmp(global_str(L, "got"), "from a thread 42") == 0);
  CHECK(strcmp(global_str(L, "order"), "later;timer;") == 0);
  CHECK(ticks >= 1); /* the host's handle ran alongside (no timing asserted) */

  /* Detaching cancels what is left; the cleanup (which awaits) runs in the host's loop. An
   * error nobody retrieved is reported on the way out; detach refuses inside a task. */
  run(L, "local lasync = require 'lasync'\n"
         "lasync.spawn(function()\n"
         "  local guard <close> = setmetatable({}, { __close = function()\n"
         "    lasync.sleep(0.002)\n"
         "    cleaned = 'yes'\n"
         "  end })\n"
         "  lasync.future():await()\n"
         "end)\n"
         "lasync.spawn(function() error('nobody awaits me') end)\n"
         "inside = lasync.spawn(function() return host.detach() end)\n");
  uv_run(&uv, UV_RUN_NOWAIT);
  run(L, "assert(inside:done()); inside_rc = inside:result()");
  CHECK(global_int(L, "inside_rc") == LAS_ERUNNING);
  detach_all(L, &uv);
  CHECK(strcmp(global_str(L, "cleaned"), "yes") == 0);
  CHECK(strstr(global_str(L, "reported"), "nobody awaits me") != NULL);
  CHECK(lasync_getloop(L) == NULL);
  CHECK(lasync_detach(L, 0) == LAS_EINVAL);
  run(L, "assert(not pcall(require('lasync').spawn, print))");

  /* Attach again: a task that ignores its cancellation keeps detach busy; force drops it
   * and reports it. */
  CHECK(lasync_attach(L, &uv) == 0);
  run(L, "local lasync = require 'lasync'\n"
         "reported = ''\n"
         "lasync.get_loop():set_exception_handler(function(_, ctx)\n"
         "  reported = reported .. tostring(ctx.error or ctx.message) .. ';'\n"
         "end)\n"
         "lasync.spawn(function() while true do pcall(lasync.sleep, 0.001) end end)\n");
  uv_run(&uv, UV_RUN_NOWAIT); /* the task starts */
  for (int i = 0; i < 5; i++) {
    CHECK(lasync_detach(L, 0) == LAS_EBUSY);
    uv_run(&uv, UV_RUN_ONCE);
  }
  CHECK(lasync_detach(L, 1) == 0);
  CHECK(strstr(global_str(L, "reported"), "destroyed but it is pending") != NULL);

  /* lua_close while attached, with work pending, leaves the host's loop closable. */
  CHECK(lasync_attach(L, &uv) == 0);
  run(L, "local lasync = require 'lasync'\n"
         "lasync.spawn(function() lasync.sleep(60) end)\n"
         "lasync.get_loop():call_later(60, print)\n");
  uv_run(&uv, UV_RUN_NOWAIT);
  lua_close(L);
  uv_close((uv_handle_t *)&timer, NULL);
  CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&uv) == 0);
}
