/* lasync_int.h - internals shared by the binding's files (not installed). */
#ifndef LASYNC_INT_H
#define LASYNC_INT_H

#include "lasync.h"
#include <lauxlib.h>
#include <stdbool.h>

#if LUA_VERSION_RELEASE_NUM >= 50406
#define lasync__closethread(co, from) lua_closethread(co, from)
#else
#define lasync__closethread(co, from) lua_resetthread(co)
#endif

#define LFUT_MAGIC 0x6c617366u

enum { K_FUTURE = 1, K_CFUTURE, K_TASK };
enum {
  F_RETRIEVED = 1,   /* the error (or result) was looked at */
  F_REPORTED = 2,    /* an unretrieved error was reported already */
  F_STARTED = 4,     /* a task's function has been entered */
  F_CANCEL_SEEN = 8, /* a CancelledError was raised inside the task */
  F_UNRETRIEVED = 16, /* failed, and listed for the report at loop close */
  F_COLLECTED = 32,   /* its finalizer ran (it may still be reachable from a report) */
  F_BARE_YIELD = 64,  /* the task is suspended at a bare coroutine.yield() */
  F_SHUTDOWN = 128    /* cancelled by the end of a run (or a detach) */
};

typedef struct lstate lstate;

/* A finished task drops its C object (so its box needs no finalizer); its state is kept in
 * the box. Everything reads a state through this. */
#define FSTATE(fu) ((fu)->f ? las_future_state((fu)->f) : (las_state_t)(fu)->final)

/* Common head of Future and Task boxes; the magic lets a type check skip metatables. */
typedef struct {
  uint32_t magic;
  unsigned char kind;
  unsigned char flags;
  unsigned char final; /* the state once a finished task let go of its C object (f == NULL) */
  int nres;
  las_future_t *f; /* NULL for a Lua future, and for a task once it finished */
  lstate *S;
  unsigned run; /* a Lua future's run: lasync.run's serial, as loops may reuse addresses */
} lfut;

/* A Lua future's box. Futures made through lasync_api.newfuture may have a C hook, and
 * `inl` more user values after the first two, where a result of 2..inl values is kept
 * instead of in a table. */
typedef struct {
  lfut base;
  int inl;
  lasync_futhook hook;
  void *hookud;
} lluafut;

typedef struct {
  lfut base;
  lua_State *co;
  int ref;     /* anchor while pending */
  int resbase; /* results start above this index of co's stack */
  lua_Integer id;
  struct { lua_Hook fn; int mask, count; } hook; /* a user hook saved while a cancel is armed */
} ltask;

typedef struct {
  las_loop_t *loop;
  lstate *S;
} lloop;

/* Per-universe state: one per main lua_State, an upvalue of every module function. */
struct lstate {
  lua_State *L;
  lua_State *runL; /* the thread inside lasync.run, from which tasks are resumed */
  las_loop_t *loop;
  ltask *current;
  ltask *main;
  int anchors; /* registry refs */
  int mt_future, mt_future_gc, mt_task, mt_task_gc, mt_loop, mt_handle;
  int cls_cancelled, cls_timeout, cls_invalid;
  int unretrieved, cfuts, handler, loopbox, tbfunc;
  int chains; /* weak-keyed: error table -> id of the task at the end of its await chain */
  int strtb, nstrtb; /* string error -> {tb=, last=}: the same for errors that are strings */
  bool debug;
  double slow;
  double shutdown; /* seconds lasync.run waits for cancelled leftovers (loop.shutdown_timeout) */
  unsigned run;       /* serial of the current lasync.run (or attachment) */
  int attached;       /* registry ref of the thread tasks are resumed from while attached to
                         a host's loop (lasync_attach), or LUA_NOREF */
  bool detaching;     /* inside lasync_detach (an exception handler may call it again) */
  /* Anchor slots: indices into the anchors table, recycled through a C free list (cheaper
   * than luaL_ref's free list kept in the table itself). Reset with the table each run. */
  int *freeslots, nfree, capfree, nextslot;
  char cbwhere[160];  /* debug mode: where the Lua callback now running was defined */
  struct { void (*cb)(void *, las_loop_t *); void *ud; } watch[8]; /* lasync_api.watch_loop */
  int nwatch;
  las_task_t *donetask; /* debug mode: the task that finished last, and its name (its box */
  char donename[64];    /* may be gone by the time a slow step is reported) */
  las_task_t *steptask; /* debug mode: the task whose step ran last, and where that step */
  char stepfrom[160];   /* began (for a first step, where its function is defined) */
};

#define LASYNC_UV_VALUES 1  /* Future box: its value(s) or error or cancel message */
#define LASYNC_UV_WAITERS 2 /* Lua Future box: nil, one waiting Task (as a light userdata), or
                              a list of those and done callbacks, in registration order */
#define LASYNC_UV_THREAD 1 /* Task box: its coroutine */
#define LASYNC_UV_EXTRA 2  /* Task box: nil, or a table of what few tasks have: name, msg
                              (the cancel message), tb (the traceback of its error) */

lstate *lasync__state(lua_State *L);
void lasync__loop_changed(lstate *S);
lfut *lasync__tofut(lua_State *L, int idx);
void lasync__push_error(lua_State *L, lstate *S, int cls, const char *msg);
void lasync__report(lua_State *L, lstate *S, const char *message, int erridx, int objidx,
                    const char *traceback);
void lasync__safe_tostring(lua_State *L, int idx);
void lasync__push_taskname(lua_State *L, ltask *tk, int boxidx);
void lasync__open_loop(lua_State *L, lstate *S);
int lasync__run(lua_State *L);
void lasync__drain_unretrieved(lua_State *L, lstate *S);
void lasync__detach_task(ltask *tk);
bool lasync__where(lua_State *of, int level, char *buf, size_t n);
int lasync__get_extra(lua_State *L, int boxidx, const char *key);
void lasync__set_extra(lua_State *L, int boxidx, const char *key);
int lasync__anchor(lua_State *L, lstate *S, int idx);
void lasync__unanchor(lua_State *L, lstate *S, int ref);
void lasync__take_anchored(lua_State *L, lstate *S, int ref);
void lasync__reset_anchors(lua_State *L, lstate *S);
int lasync__cancel_hook(las_task_t *t, void *data);
int lasync__push_outcome(lua_State *L, lstate *S, lfut *fu, int idx);
void lasync__push_errval(lua_State *L, lfut *fu, int idx);
void lasync__check_callable(lua_State *L, int idx, const char *fname);
ltask *lasync__spawn_main(lua_State *L, lstate *S, int fidx, int nargs);
int lasync__get_loop(lua_State *L);
void lasync__note_callback(lua_State *L, lstate *S, int fidx);
const char *lasync__push_cbtb(lua_State *L);
bool lasync__is_done_callback(las_cb fn);
bool lasync__is_lua_task(las_task_t *t);

#endif
