/*
 * lasync.h - the embedding API: core/las.h plus what a host needs to open lasync in a
 * lua_State, hand scripts C futures and find the loop a state is running.
 *
 * A host typically:
 *   luaL_requiref(L, "lasync", lasync_open, 1);   -- or package.preload
 *   ... in a script: lasync.run(main) ...
 * and, from a Lua-called C function on the loop thread:
 *   las_future_t *f = las_future_new(lasync_getloop(L));
 *   las_future_hold_loop(f);          -- a worker thread will finish it
 *   lasync_pushfuture(L, f);          -- the script awaits it
 *   hand f to a worker, which calls las_future_post_values(f, vals, n) (consumes its ref)
 * A host that runs its own uv loop calls lasync_attach(L, uv) instead, and scripts spawn
 * tasks that its uv_run drives (see lasync_detach for the way out).
 */
#ifndef LASYNC_H
#define LASYNC_H

#include "las.h"
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the lasync module (what `require "lasync"` returns) and leaves it on the stack. */
int lasync_open(lua_State *L);

/* The loop running in L's state (inside lasync.run), or NULL. */
las_loop_t *lasync_getloop(lua_State *L);
/* The lua_State whose lasync.run drives the loop (for running Lua from C callbacks on the
 * loop thread), or NULL for a loop that is not lasync's. */
lua_State *lasync_loopstate(las_loop_t *loop);

/* Pushes the Lua object for a C future (the same object each time for the same future).
 * It takes its own reference; the caller keeps its own. */
void lasync_pushfuture(lua_State *L, las_future_t *f);
/* The C future behind the Future or Task at idx, or NULL. Borrowed. */
las_future_t *lasync_tofuture(lua_State *L, int idx);

/* Runs lasync in L's state on a libuv loop the host drives itself: after lasync_attach,
 * Lua code in L can spawn tasks, sleep, make and await futures, as inside lasync.run (there
 * is no main task), and they make progress while the host runs uv_run on `uv`. Call it on
 * the loop thread, not inside lasync.run. Returns 0; LAS_ERUNNING if a loop already runs
 * in L's state; LAS_EINVAL if lasync is not open in L or uv is NULL; LAS_ENOMEM. */
int lasync_attach(lua_State *L, uv_loop_t *uv);
/* Detaches from the host's loop. While tasks are pending it cancels them (once each) and
 * returns LAS_EBUSY: keep running the uv loop so they can clean up, and call again; the
 * same while calls on the thread pool (ffi.to_thread, las_loop_work_begin) are running.
 * With `force`, tasks still pending are reported ("destroyed but it is pending") and
 * dropped instead, and running calls are reported. Once no task is left, errors nobody
 * retrieved are reported, callbacks and timers still queued are dropped unrun (as
 * lasync.run drops them at its end), and 0 is returned: lasync's handles finish closing in
 * the host's next uv_run iteration (run it once more before uv_loop_close). LAS_ERUNNING
 * from inside a task or one of lasync's callbacks; LAS_EINVAL if L's state is not attached. */
int lasync_detach(lua_State *L, int force);

/* Hands the error value at idx to the running loop's exception handler (stderr by default),
 * never dropping it; `what` says where it came from (e.g. "ffi callback"). Pops nothing. */
void lasync_report_error(lua_State *L, int idx, const char *what);

/* What a separately loaded module (lasync.ffi) needs from the lasync instance of a state.
 * lasync_open leaves a pointer to this table in the registry under LASYNC_API_KEY: linking
 * lasync into the other module would give it a second, unconnected instance, and looking
 * symbols up would require hosts to export theirs. */
#define LASYNC_API_KEY "lasync.api"
#define LASYNC_API_VERSION 3

/* A C hook on a Lua future (lasync_api.newfuture): called on the loop thread, once, when the
 * future finishes by any way other than lasync_api.settle (it was cancelled, or Lua code set
 * its outcome). `fut` is the future's index in L, `state` the las_state_t it finished in. It
 * runs synchronously, inside the call
 * that finished the future: it must not raise, yield or finish other futures. */
typedef void (*lasync_futhook)(lua_State *L, int fut, int state, void *ud);

typedef struct lasync_api {
  int version;
  las_loop_t *(*getloop)(lua_State *L);
  int (*post)(las_loop_t *loop, las_post_cb cb, void *arg);
  void (*hold)(las_loop_t *loop);
  void (*release)(las_loop_t *loop);
  uv_loop_t *(*uv)(las_loop_t *loop);
  void (*ref)(las_loop_t *loop);
  void (*unref)(las_loop_t *loop);
  void (*report)(lua_State *L, int idx, const char *what);
  /* Version 2. Pushes a new pending Lua Future (as lasync.future()) with room for up to
   * `nvalues` result values in the future itself (up to 8; more go in a table, as for any
   * Lua future), and a hook that, if not NULL, tells the C side when the future finishes
   * without it. Returns 0, or -1 (pushing nothing) when no lasync.run runs in L's state. */
  int (*newfuture)(lua_State *L, int nvalues, lasync_futhook hook, void *ud);
  /* Sets the result of the pending Lua Future at `fut` to the n values on top of the stack
   * and pops them, waking its waiters, without calling its hook. Returns 1, or 0 when the
   * future had already finished (the values are dropped). Does not raise. */
  int (*settle)(lua_State *L, int fut, int n);
  /* Calls cb(ud, loop) on the loop thread whenever the loop of L's state changes: at once
   * if one runs, then as each lasync.run or attachment begins (its loop) and ends (NULL).
   * Returns 0, or -1 when lasync is not open in L or 8 watchers are registered already. */
  int (*watch_loop)(lua_State *L, void (*cb)(void *ud, las_loop_t *loop), void *ud);
  /* Version 3. las_loop_work_begin/end: a call in flight on the thread pool, which the end
   * of lasync.run (and lasync_detach) waits for. */
  void (*work_begin)(las_loop_t *loop);
  void (*work_end)(las_loop_t *loop);
} lasync_api;

#ifdef __cplusplus
}
#endif
#endif
