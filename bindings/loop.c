/* loop.c - lasync.run, the loop object, call_soon/call_later handles, error reports. */
#include "lasync_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define getS(L) ((lstate *)lua_touserdata(L, lua_upvalueindex(1)))

typedef struct {
  las_timer_t *timer;
  lstate *S;
  int ref;
  int nargs; /* the callable and its arguments, nils included */
  bool cancelled, done;
  double when;
} lhandle;

/* ------------------------------------------------------------------------------ reporting */

/* Default exception handler: everything on stderr, never lost. */
static void report_default(lua_State *L, const char *message, int erridx, const char *tb) {
  fprintf(stderr, "lasync: %s\n", message);
  if (erridx) {
    lasync__safe_tostring(L, erridx);
    fprintf(stderr, "  error: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!tb && lua_type(L, erridx) == LUA_TTABLE) {
      lua_pushliteral(L, "traceback"); /* raw: an error's __index may itself raise */
      lua_rawget(L, erridx);
      if (lua_type(L, -1) == LUA_TSTRING) fprintf(stderr, "%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  if (tb) fprintf(stderr, "%s\n", tb);
  fflush(stderr);
}

/* Sends one report to the loop's exception handler as an asyncio-style context table
 * {message=, error=, future= or task=, traceback=}; if the handler itself fails, both the
 * report and the handler's error go to stderr. */
void lasync__report(lua_State *L, lstate *S, const char *message, int erridx, int objidx,
                    const char *traceback) {
  if (erridx) erridx = lua_absindex(L, erridx);
  if (objidx) objidx = lua_absindex(L, objidx);
  int base = lua_gettop(L);
  lfut *fu = objidx ? lasync__tofut(L, objidx) : NULL;
  if (!traceback && fu && fu->kind == K_TASK && lasync__get_extra(L, objidx, "tb") == LUA_TSTRING)
    traceback = lua_tostring(L, -1); /* stays on the stack while used */
  if (S && S->handler != LUA_NOREF && S->loop) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->handler);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->loopbox);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    if (erridx) {
      lua_pushvalue(L, erridx);
      lua_setfield(L, -2, "error");
    }
    if (fu) {
      lua_pushvalue(L, objidx);
      lua_setfield(L, -2, fu->kind == K_TASK ? "task" : "future");
    }
    if (traceback) {
      lua_pushstring(L, traceback);
      lua_setfield(L, -2, "traceback");
    }
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
      report_default(L, message, erridx, traceback);
      report_default(L, "the exception handler failed", lua_gettop(L), NULL);
    }
  } else {
    report_default(L, message, erridx, traceback);
  }
  lua_settop(L, base);
}

/* Reports every failed future or task whose error nobody retrieved. */
void lasync__drain_unretrieved(lua_State *L, lstate *S) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->unretrieved);
  int set = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, set)) {
    lua_pop(L, 1);
    lfut *fu = lasync__tofut(L, -1);
    if (fu && (fu->flags & F_UNRETRIEVED) && !(fu->flags & (F_RETRIEVED | F_REPORTED))) {
      fu->flags |= F_REPORTED;
      lasync__push_errval(L, fu, lua_gettop(L));
      lasync__report(L, S, fu->kind == K_TASK ? "Task exception was never retrieved"
                                               : "Future exception was never retrieved",
                     -1, -2, NULL);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, LUA_REGISTRYINDEX, S->unretrieved);
}

/* Debug mode's slow-callback report: name the task (with its set_name) and where it now
 * stands, or the Lua callback and where it was defined. */
static void handle_cb(void *a, void *b);

/* Debug mode: remembers where the Lua function about to run as a callback was defined, for
 * the slow-callback report (valid for that callback only: the report checks which ran). */
void lasync__note_callback(lua_State *L, lstate *S, int fidx) {
  if (!S->debug) return;
  lua_Debug ar;
  lua_pushvalue(L, fidx);
  if (lua_getinfo(L, ">S", &ar))
    snprintf(S->cbwhere, sizeof S->cbwhere, "%s:%d", ar.short_src, ar.linedefined);
  else
    S->cbwhere[0] = '\0';
}

static void slow_hook(las_loop_t *loop, las_task_t *t, las_cb fn, double secs) {
  lstate *S = las_loop_get_data(loop);
  lua_State *L = S->runL;
  char dur[32];
  snprintf(dur, sizeof dur, "%.3f", secs);
  if (t && !lasync__is_lua_task(t)) {
    lua_pushfstring(L, "Executing a C task took %s seconds", dur);
  } else if (t && las_future_state(las_task_future(t)) != LAS_PENDING) {
    /* It finished in that step: its box is no longer anchored, so only what task_done kept
     * is safe to use. */
    if (t == S->steptask)
      lua_pushfstring(L, "Executing %s took %s seconds (it finished, in a step that began at %s)",
                      t == S->donetask ? S->donename : "a task", dur, S->stepfrom);
    else
      lua_pushfstring(L, "Executing %s took %s seconds (it finished)",
                      t == S->donetask ? S->donename : "a task", dur);
  } else if (t) {
    ltask *tk = las_task_data(t);
    if (tk->ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
      lua_rawgeti(L, -1, tk->ref);
      lasync__push_taskname(L, tk, lua_gettop(L));
      lua_replace(L, -3);
      lua_pop(L, 1);
    } else {
      lua_pushfstring(L, "Task-%I", tk->id);
    }
    char where[256];
    if (lasync__where(tk->co, 0, where, sizeof where))
      lua_pushfstring(L, "Executing %s took %s seconds (suspended at %s)", lua_tostring(L, -1),
                      dur, where);
    else
      lua_pushfstring(L, "Executing %s took %s seconds", lua_tostring(L, -1), dur);
    lua_remove(L, -2);
  } else if (S->cbwhere[0] && (fn == handle_cb || lasync__is_done_callback(fn))) {
    lua_pushfstring(L, "Executing callback %s took %s seconds", S->cbwhere, dur);
  } else {
    lua_pushfstring(L, "Executing a C callback took %s seconds", dur);
  }
  S->cbwhere[0] = '\0';
  lasync__report(L, S, lua_tostring(L, -1), 0, 0, NULL);
  lua_pop(L, 1);
}

static void apply_debug(lstate *S, double slow) {
  if (S->loop) las_loop_set_debug(S->loop, S->debug, slow, slow_hook);
}

/* -------------------------------------------------------------------------------- handles */

/* A call_soon/call_later callback: the handle stays anchored until this runs (or its timer
 * is stopped), so its memory is valid here whatever Lua collected meanwhile. */
static void handle_cb(void *a, void *b) {
  (void)b;
  lhandle *h = a;
  lstate *S = h->S;
  lua_State *L = S->runL;
  lasync__take_anchored(L, S, h->ref);
  h->ref = LUA_NOREF;
  if (h->cancelled) {
    lua_pop(L, 1);
    return;
  }
  h->done = true;
  int base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->tbfunc);
  lua_getiuservalue(L, base, 1);
  int n = h->nargs;
  luaL_checkstack(L, n, "too many arguments");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, base + 2, i);
  lua_remove(L, base + 2);
  lasync__note_callback(L, S, base + 2);
  if (lua_pcall(L, n - 1, 0, base + 1) != LUA_OK) {
    int err = lua_gettop(L);
    lasync__report(L, S, "Exception in callback", err, 0, lasync__push_cbtb(L));
  }
  lua_settop(L, base - 1);
}

static lloop *checkloop(lua_State *L, lstate *S, const char *fname) {
  lloop *lb = luaL_checkudata(L, 1, "lasync.Loop");
  if (!lb->loop || lb->loop != S->loop) luaL_error(L, "%s: the loop is closed", fname);
  return lb;
}

/* Builds the handle and anchors it; the callable and its arguments live in a table. */
static lhandle *new_handle(lua_State *L, lstate *S, int fidx, const char *fname) {
  if (lua_type(L, fidx) != LUA_TFUNCTION && luaL_getmetafield(L, fidx, "__call") == LUA_TNIL)
    luaL_error(L, "%s: expected a function, got %s", fname, luaL_typename(L, fidx));
  else if (lua_type(L, fidx) != LUA_TFUNCTION)
    lua_pop(L, 1);
  int n = lua_gettop(L) - fidx + 1;
  lhandle *h = lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  h->S = S;
  h->ref = LUA_NOREF;
  h->nargs = n;
  luaL_setmetatable(L, "lasync.Handle");
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, fidx + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setiuservalue(L, -2, 1);
  h->ref = lasync__anchor(L, S, -1);
  return h;
}

static int loop_call_soon(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = checkloop(L, S, "loop:call_soon");
  lhandle *h = new_handle(L, S, 2, "loop:call_soon");
  h->when = NAN; /* no time: a call_soon handle */
  int rc = las_call_soon(lb->loop, handle_cb, h, NULL);
  if (rc) return luaL_error(L, "loop:call_soon: %s", las_strerror(rc));
  return 1;
}

static int call_at(lua_State *L, lstate *S, lloop *lb, double when, const char *fname) {
  if (when != when) return luaL_error(L, "%s: the time is NaN", fname);
  lhandle *h = new_handle(L, S, 3, fname);
  h->when = when;
  h->timer = las_timer_new(lb->loop);
  int rc = h->timer ? las_timer_start(h->timer, when, handle_cb, h, NULL) : LAS_ENOMEM;
  if (rc) return luaL_error(L, "%s: %s", fname, las_strerror(rc));
  return 1;
}

static int loop_call_later(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = checkloop(L, S, "loop:call_later");
  double delay = luaL_checknumber(L, 2);
  if (delay != delay) return luaL_error(L, "loop:call_later: the delay is NaN");
  return call_at(L, S, lb, las_loop_time(lb->loop) + (delay > 0 ? delay : 0), "loop:call_later");
}

static int loop_call_at(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = checkloop(L, S, "loop:call_at");
  return call_at(L, S, lb, luaL_checknumber(L, 2), "loop:call_at");
}

static int handle_cancel(lua_State *L) {
  lhandle *h = luaL_checkudata(L, 1, "lasync.Handle");
  if (h->cancelled) return 0;
  h->cancelled = true; /* also once it ran, or while it runs: cancelled() says so (asyncio) */
  if (h->done) return 0;
  if (h->timer && las_timer_active(h->timer)) {
    las_timer_stop(h->timer);
    lasync__unanchor(L, h->S, h->ref);
    h->ref = LUA_NOREF;
  }
  return 0;
}

static int handle_cancelled(lua_State *L) {
  lhandle *h = luaL_checkudata(L, 1, "lasync.Handle");
  lua_pushboolean(L, h->cancelled);
  return 1;
}

static int handle_when(lua_State *L) {
  lhandle *h = luaL_checkudata(L, 1, "lasync.Handle");
  if (isnan(h->when)) return 0;
  lua_pushnumber(L, h->when);
  return 1;
}

static int handle_gc(lua_State *L) {
  lhandle *h = luaL_checkudata(L, 1, "lasync.Handle");
  las_timer_free(h->timer);
  h->timer = NULL;
  return 0;
}

/* ------------------------------------------------------------------------------ the loop */

static int loop_time(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = luaL_checkudata(L, 1, "lasync.Loop");
  (void)S;
  lua_pushnumber(L, las_loop_time(lb->loop));
  return 1;
}

static int loop_set_debug(lua_State *L) {
  lstate *S = getS(L);
  checkloop(L, S, "loop:set_debug");
  S->debug = lua_toboolean(L, 2);
  apply_debug(S, -1);
  return 0;
}

static int loop_get_debug(lua_State *L) {
  lstate *S = getS(L);
  checkloop(L, S, "loop:get_debug");
  lua_pushboolean(L, S->debug);
  return 1;
}

static int loop_set_handler(lua_State *L) {
  lstate *S = getS(L);
  checkloop(L, S, "loop:set_exception_handler");
  if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TFUNCTION)
    return luaL_error(L, "loop:set_exception_handler: expected a function or nil, got %s",
                      luaL_typename(L, 2));
  luaL_unref(L, LUA_REGISTRYINDEX, S->handler);
  S->handler = LUA_NOREF;
  if (lua_type(L, 2) == LUA_TFUNCTION) {
    lua_pushvalue(L, 2);
    S->handler = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

static int loop_get_handler(lua_State *L) {
  lstate *S = getS(L);
  checkloop(L, S, "loop:get_exception_handler");
  if (S->handler == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->handler);
  return 1;
}

static int loop_call_handler(lua_State *L) {
  lstate *S = getS(L);
  checkloop(L, S, "loop:call_exception_handler");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "message");
  lua_getfield(L, 2, "error");
  const char *msg = lua_tostring(L, -2);
  lasync__report(L, S, msg ? msg : "unhandled exception", lua_isnil(L, -1) ? 0 : -1, 0, NULL);
  return 0;
}

/* loop:stats() -> pending tasks, timers, ready callbacks: what the busted helper checks for
 * leftovers. */
static int loop_stats(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = checkloop(L, S, "loop:stats");
  lua_pushinteger(L, (lua_Integer)las_loop_task_count(lb->loop));
  lua_pushinteger(L, (lua_Integer)las_loop_timer_count(lb->loop));
  lua_pushinteger(L, (lua_Integer)las_loop_ready_count(lb->loop));
  return 3;
}

static int loop_is_running(lua_State *L) {
  lstate *S = getS(L);
  lloop *lb = luaL_checkudata(L, 1, "lasync.Loop");
  lua_pushboolean(L, lb->loop && lb->loop == S->loop);
  return 1;
}

/* Reached only for keys that are not methods (the methods table is __index itself). */
static int loop_index(lua_State *L) {
  lstate *S = getS(L);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "slow_callback_duration") == 0) {
    lua_pushnumber(L, S->slow);
    return 1;
  }
  if (k && strcmp(k, "shutdown_timeout") == 0) {
    lua_pushnumber(L, S->shutdown);
    return 1;
  }
  return 0;
}

static int loop_newindex(lua_State *L) {
  lstate *S = getS(L);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "shutdown_timeout") == 0) {
    int isnum;
    double v = lua_tonumberx(L, 3, &isnum);
    if (!isnum || !(v >= 0)) return luaL_error(L, "loop.shutdown_timeout: must be a number >= 0");
    S->shutdown = v;
    return 0;
  }
  if (!k || strcmp(k, "slow_callback_duration") != 0)
    return luaL_error(L, "loop: cannot set field '%s'", k ? k : luaL_typename(L, 2));
  int isnum;
  double v = lua_tonumberx(L, 3, &isnum);
  if (!isnum || !(v >= 0)) return luaL_error(L, "loop.slow_callback_duration: must be a number >= 0");
  S->slow = v;
  apply_debug(S, v);
  return 0;
}

static int loop_tostring(lua_State *L) {
  lloop *lb = luaL_checkudata(L, 1, "lasync.Loop");
  lua_pushfstring(L, "Loop<%s>", lb->loop ? "running" : "closed");
  return 1;
}

int lasync__get_loop(lua_State *L) {
  lstate *S = getS(L);
  if (!S->loop) return luaL_error(L, "lasync.get_loop: no loop is running (use lasync.run)");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->loopbox);
  return 1;
}

/* Tears down whatever a run leaves: the loop (forcibly, if work remains), the anchors of
 * every object C was holding for it, the handler. Idempotent: it is the __close of the
 * guard lasync.run keeps, and the Loop object's __gc (for lua_close while attached), so an
 * error anywhere in lasync.run still ends here. Scripts never reach it: the Loop object
 * they get has no __close and hides its metatable. */
static int loop_close(lua_State *L) {
  lloop *lb = luaL_checkudata(L, 1, "lasync.Loop");
  lstate *S = lb->S;
  if (!lb->loop) return 0;
  las_loop_t *loop = lb->loop;
  lb->loop = NULL;
  if (S->loop == loop) {
    /* Tasks still pending are dead with the loop: let go of their C objects. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lfut *fu = lasync__tofut(L, -1);
      if (fu && fu->kind == K_TASK) lasync__detach_task((ltask *)fu);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    S->loop = NULL;
    lasync__loop_changed(S); /* watchers let go before the loop goes */
    if (las_loop_close(loop) != 0) las_loop_destroy(loop);
    S->current = NULL;
    S->main = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, S->handler);
    S->handler = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, S->loopbox);
    S->loopbox = LUA_NOREF;
    lasync__reset_anchors(L, S);
  }
  return 0;
}

/* ------------------------------------------------------------------------------ lasync.run */

static int guard_close(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lua_replace(L, 1);
  return loop_close(L);
}

static void stop_cb(void *a, void *b) {
  (void)b;
  las_loop_stop(a);
}

static void noop_cb(void *a, void *b) {
  (void)a;
  (void)b;
}

/* Cancels every pending task once for the shutdown, also one that caught an earlier
 * cancellation and went on (its cancelling() count says nothing about this one). */
static void cancel_pending(lua_State *L, lstate *S) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lfut *fu = lasync__tofut(L, -1);
    if (fu && fu->kind == K_TASK && FSTATE(fu) == LAS_PENDING && !(fu->flags & F_SHUTDOWN)) {
      fu->flags |= F_SHUTDOWN;
      las_task_cancel((las_task_t *)fu->f);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Cancels every task still pending (once each) and runs the loop until they finish and the
 * calls in flight on the thread pool have returned (asyncio's shutdown_default_executor:
 * closing the loop under them would leave it and them unfreed), until nothing can make
 * progress, or until loop.shutdown_timeout passes: a task that ignores its cancellation
 * (polling with bare yields, or swallowing CancelledError) or a C call that never returns
 * must not hang lasync.run. A guard timer wakes the loop at the deadline. Tasks spawned by
 * cleanup code are cancelled too. */
static void cancel_leftovers(lua_State *L, lstate *S) {
  las_loop_t *loop = S->loop;
  if (las_loop_task_count(loop) == 0 && las_loop_work_count(loop) == 0) return;
  double deadline = las_loop_time(loop) + S->shutdown;
  las_timer_t *guard = las_timer_new(loop);
  while (las_loop_task_count(loop) > 0 || las_loop_work_count(loop) > 0) {
    cancel_pending(L, S);
    /* Nothing but the guard could wake a task (they wait on futures nobody will complete):
     * stop here rather than sit out the deadline. */
    las_timer_stop(guard);
    if (!las_loop_alive(loop) || las_loop_time(loop) >= deadline) break;
    if (guard) las_timer_start(guard, deadline, noop_cb, NULL, NULL);
    las_loop_run_once(loop);
  }
  las_timer_free(guard);
}

static void report_stuck(lua_State *L, lstate *S) {
  size_t works = las_loop_work_count(S->loop);
  if (works > 0) {
    lua_pushfstring(L, works == 1 ? "%I call on the thread pool was still running when the "
                                    "loop closed: its result is dropped"
                                  : "%I calls on the thread pool were still running when the "
                                    "loop closed: their results are dropped",
                    (lua_Integer)works);
    lasync__report(L, S, lua_tostring(L, -1), 0, 0, NULL);
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lfut *fu = lasync__tofut(L, -1);
    if (fu && fu->kind == K_TASK && FSTATE(fu) == LAS_PENDING) {
      ltask *tk = (ltask *)fu;
      char where[256];
      lasync__where(tk->co, 0, where, sizeof where);
      lua_pushfstring(L, "Task-%I was destroyed but it is pending (waiting at %s when the loop closed)",
                      tk->id, where);
      lasync__report(L, S, lua_tostring(L, -1), 0, 0, NULL);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Pushes a Loop object (whose __close/__gc tears it all down) and makes a new loop on uv
 * (NULL: a private one) the state's loop, with tasks resumed from runL. Everything that
 * may raise comes before the loop exists, so nothing leaks. Returns 0 or the error of
 * las_loop_new (then the state is as it was and the Loop object is a dead one). */
static int begin_loop(lua_State *L, lstate *S, uv_loop_t *uv, lua_State *runL) {
  lloop *lb = lua_newuserdatauv(L, sizeof *lb, 0);
  lb->loop = NULL;
  lb->S = S;
  luaL_setmetatable(L, "lasync.Loop");
  lua_pushvalue(L, -1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lasync__reset_anchors(L, S);
  las_loop_t *loop;
  int rc = las_loop_new(&loop, uv);
  if (rc) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return rc;
  }
  lb->loop = loop;
  S->loop = loop;
  S->loopbox = ref;
  S->runL = runL;
  S->run++;
  las_loop_set_data(loop, S);
  las_loop_set_cancel_hook(loop, lasync__cancel_hook);
  const char *dbg = getenv("LASYNC_DEBUG");
  S->debug = dbg && *dbg && strcmp(dbg, "0") != 0;
  /* The settings belong to the loop: a new one starts from the defaults, whatever an
   * earlier run set (a spec that shortened shutdown_timeout must not shorten the next). */
  S->slow = 0.1;
  S->shutdown = 5;
  apply_debug(S, S->slow);
  lasync__loop_changed(S);
  return 0;
}

int lasync__run(lua_State *L) {
  lstate *S = getS(L);
  lasync__check_callable(L, 1, "lasync.run");
  luaL_checkstack(L, 8, "lasync.run");
  if (S->loop)
    return luaL_error(L, S->attached != LUA_NOREF
                             ? "lasync.run: this Lua state is attached to its host's loop "
                               "(lasync_attach): spawn the function instead"
                             : "lasync.run: a loop is already running in this Lua state (await "
                               "the function, or spawn it, instead of nesting run)");
  int nargs = lua_gettop(L) - 1;
  int rc = begin_loop(L, S, NULL, L);
  if (rc) return luaL_error(L, "lasync.run: %s", las_strerror(rc));
  las_loop_t *loop = S->loop;
  lua_newuserdatauv(L, 0, 1); /* the guard whose __close tears the run down */
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, "lasync.RunGuard");
  lua_toclose(L, lua_gettop(L));

  ltask *main = lasync__spawn_main(L, S, 1, nargs);
  int mainidx = lua_gettop(L);
  S->main = main;
  las_future_add_callback(main->base.f, stop_cb, loop);
  las_loop_run(loop);

  bool deadlock = FSTATE(&main->base) == LAS_PENDING;
  if (deadlock) {
    char where[256];
    lasync__where(main->co, 0, where, sizeof where);
    lua_pushfstring(L, "lasync.run: deadlock: the main task waits at %s on something that "
                       "nothing left in the loop can complete", where);
  }
  cancel_leftovers(L, S);
  report_stuck(L, S);
  if (!deadlock && FSTATE(&main->base) != LAS_PENDING) main->base.flags |= F_RETRIEVED;
  lasync__drain_unretrieved(L, S);
  if (deadlock) return lua_error(L);
  lua_settop(L, mainidx);
  return lasync__push_outcome(L, S, &main->base, mainidx);
}

/* ------------------------------------------------------------------- a host's own loop */

static int attach_protected(lua_State *L) {
  lstate *S = lua_touserdata(L, 1);
  lua_State *runL = lua_newthread(L);
  lua_pushvalue(L, -1);
  S->attached = luaL_ref(L, LUA_REGISTRYINDEX); /* lasync_attach takes it back on failure */
  int rc = begin_loop(L, S, lua_touserdata(L, 2), runL);
  lua_pushinteger(L, rc);
  return 1;
}

int lasync_attach(lua_State *L, uv_loop_t *uv) {
  lstate *S = lasync__state(L);
  if (!S || !uv) return LAS_EINVAL;
  if (S->loop) return LAS_ERUNNING;
  if (!lua_checkstack(L, 4)) return LAS_ENOMEM;
  lua_pushcfunction(L, attach_protected);
  lua_pushlightuserdata(L, S);
  lua_pushlightuserdata(L, uv);
  int rc = lua_pcall(L, 2, 1, 0) == LUA_OK ? (int)lua_tointeger(L, -1) : LAS_ENOMEM;
  lua_pop(L, 1);
  if (rc && S->attached != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, S->attached);
    S->attached = LUA_NOREF;
  }
  return rc;
}

static int detach_protected(lua_State *L) {
  lstate *S = lua_touserdata(L, 1);
  int force = lua_toboolean(L, 2);
  /* Tasks left that nothing of lasync's can wake any more (they swallowed their cancellation
   * and wait on a future nobody will complete) would keep detach busy forever: they are
   * dropped as with force. */
  if (las_loop_task_count(S->loop) > 0 && !force) {
    cancel_pending(L, S);
    if (las_loop_task_count(S->loop) > 0 && las_loop_has_work(S->loop)) {
      lua_pushinteger(L, LAS_EBUSY);
      return 1;
    }
  }
  /* Calls still running on the thread pool finish in the host's uv_run. */
  if (las_loop_work_count(S->loop) > 0 && !force) {
    lua_pushinteger(L, LAS_EBUSY);
    return 1;
  }
  report_stuck(L, S);
  lasync__drain_unretrieved(L, S);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->loopbox);
  lua_pushcfunction(L, loop_close);
  lua_insert(L, -2);
  lua_call(L, 1, 0);
  luaL_unref(L, LUA_REGISTRYINDEX, S->attached);
  S->attached = LUA_NOREF;
  S->runL = NULL;
  lua_pushinteger(L, 0);
  return 1;
}

int lasync_detach(lua_State *L, int force) {
  lstate *S = lasync__state(L);
  if (!S || S->attached == LUA_NOREF || !S->loop) return LAS_EINVAL;
  if (S->current || S->detaching || las_loop_in_callback(S->loop)) return LAS_ERUNNING;
  if (!lua_checkstack(L, 4)) return LAS_ENOMEM;
  lua_pushcfunction(L, detach_protected);
  lua_pushlightuserdata(L, S);
  lua_pushboolean(L, force);
  S->detaching = true;
  int rc = lua_pcall(L, 2, 1, 0) == LUA_OK ? (int)lua_tointeger(L, -1) : LAS_ENOMEM;
  S->detaching = false;
  lua_pop(L, 1);
  return rc;
}

static const luaL_Reg loop_methods[] = {
  {"time", loop_time}, {"call_soon", loop_call_soon}, {"call_later", loop_call_later},
  {"call_at", loop_call_at}, {"set_debug", loop_set_debug}, {"get_debug", loop_get_debug},
  {"set_exception_handler", loop_set_handler}, {"get_exception_handler", loop_get_handler},
  {"call_exception_handler", loop_call_handler}, {"stats", loop_stats},
  {"is_running", loop_is_running}, {NULL, NULL}};

static const luaL_Reg handle_methods[] = {
  {"cancel", handle_cancel}, {"cancelled", handle_cancelled}, {"when", handle_when}, {NULL, NULL}};

void lasync__open_loop(lua_State *L, lstate *S) {
  luaL_newmetatable(L, "lasync.Loop");
  lua_newtable(L);
  lua_pushlightuserdata(L, S);
  luaL_setfuncs(L, loop_methods, 1);
  lua_createtable(L, 0, 1);
  lua_pushlightuserdata(L, S);
  lua_pushcclosure(L, loop_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushlightuserdata(L, S);
  lua_pushcclosure(L, loop_newindex, 1);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, loop_close);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "lasync.Loop");
  lua_setfield(L, -2, "__metatable");
  lua_pushcfunction(L, loop_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, "lasync.RunGuard");
  lua_pushcfunction(L, guard_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_newmetatable(L, "lasync.Handle");
  luaL_newlib(L, handle_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, handle_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
