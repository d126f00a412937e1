/* ffi_cb.c - Lua functions as C callbacks, from the loop thread or any other thread;
 * callback-style C APIs as awaitables; blocking C calls on the libuv thread pool.
 *
 * Threading model. A Lua state and its loop live on one thread (the loop thread). A
 * callback called there runs its Lua function directly. Called on any other thread it
 * never touches Lua: its arguments are copied into a message posted to the loop with
 * las_loop_post; a void callback returns at once, one with a result waits for the loop
 * thread to run it. Closures are never given back to libffi while the process lives: a
 * freed callback keeps its trampoline (so a late or stale call is caught, not a crash)
 * and is reused only after a quarantine of newer frees. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ffi_lua.h"
#include "lasync.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the lasync entry points, from the lasync instance of this state ---- */

/* The FFI module must use the very lasync instance the script loaded (its state lives
 * behind static registry keys), so it takes lasync's entry points from the table that
 * lasync_open leaves in the registry (bindings/lasync.h), never linking lasync twice. */
static lasync_api api;
static int api_ok;

static int load_api(lua_State *L) {
  if (api_ok) return 1;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LASYNC_API_KEY) != LUA_TLIGHTUSERDATA) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lasync");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) { lua_pop(L, 1); return 0; }
    lua_getfield(L, LUA_REGISTRYINDEX, LASYNC_API_KEY);
  }
  const lasync_api *a = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!a || a->version != LASYNC_API_VERSION) return 0;
  api = *a;
  api_ok = 1;
  return 1;
}

/* ---- the hub: what closures and foreign threads share with one Lua state ---- */

struct cbhub {
  pthread_mutex_t mu;
  int closed;                   /* the state is gone */
  las_loop_t *loop;             /* referenced; posts go here */
  pthread_t owner;              /* the loop thread */
  _Atomic long busy;            /* nonzero while the loop thread is inside a C call */
  double deadlock_timeout;
  fstate *S;                    /* loop thread only, NULL once closed */
  struct cbmsg *qhead, *qtail;  /* foreign calls waiting for the loop thread */
  int scheduled;                /* a drain is posted */
  int jobs;                     /* ffi.to_thread calls running on the thread pool now */
  pthread_cond_t jobs_cv;       /* signalled when the last one returns after close */
  struct cbhub *next;           /* all hubs, for the life of the process */
};

/* Hubs are never freed: a closure may be called from some thread long after its state
 * closed, and must still find a hub that says so. They are small, one per state. */
static cbhub *all_hubs;

/* Points the hub at the loop running in L's state (taking a reference, so a foreign
 * thread may still post to it after it closed). Called on the loop thread. */
static las_loop_t *hub_bind(lua_State *L, fstate *S) {
  cbhub *h = S->hub;
  if (!load_api(L)) return NULL;
  las_loop_t *loop = api.getloop(L);
  if (!loop || loop == h->loop) return loop;
  api.ref(loop);
  pthread_mutex_lock(&h->mu);
  las_loop_t *old = h->loop;
  h->loop = loop;
  pthread_mutex_unlock(&h->mu);
  if (old) api.unref(old);
  return loop;
}

/* Follows the state's loop as runs and attachments begin and end (lasync_api.watch_loop),
 * so that calls from other threads reach the loop running now, whenever the callback was
 * made; between runs they get a definite "closed" status. */
static void hub_follow(void *ud, las_loop_t *loop) {
  cbhub *h = ud;
  if (loop) api.ref(loop);
  pthread_mutex_lock(&h->mu);
  las_loop_t *old = h->loop;
  if (h->closed) old = loop; /* the state is gone: keep nothing */
  else h->loop = loop;
  pthread_mutex_unlock(&h->mu);
  if (old) api.unref(old);
}

/* ---- closure slots ---- */

enum { SL_FREE, SL_LIVE, SL_DEAD };
enum { ST_OK = 0, ST_CLOSED = 1, ST_DEADLOCK = 2, ST_FREED = 3, ST_TWICE = 4, ST_ERROR = 5 };

typedef struct cbslot {
  ffi_closure *closure;
  void *code;
  atomic_int state;
  atomic_int fired;             /* one-shot callbacks: set by the first call */
  _Atomic(cbhub *) hub;
  int ct;                       /* the function type */
  int fnref, futref;            /* Lua function (registry ref); one-shots: anchor of the
                                   future the call completes */
  int oneshot;
  las_loop_t *heldloop;         /* one-shots: the loop held (and referenced) until the call */
  int kill_on_cancel;           /* one-shot: the C side never calls after a cancel */
  _Atomic lua_Integer gen;      /* bumped on each use: release tokens, and queued calls
                                   tell their slot from a later use of it */
  ffi_cif cif;                  /* the cif and its types live in the slot */
  ffi_type **atypes;
  int nparams, cap;
  struct cbslot *next;          /* free list or quarantine */
  struct cbslot *allnext;       /* every slot ever made: they live as long as the process */
} cbslot;

#define QUARANTINE 256

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static cbslot *pool_free, *quar_head, *quar_tail, *all_slots;
static int quar_n, fail_closures;
static _Thread_local int last_status __attribute__((tls_model("initial-exec")));

/* The status of the last callback call made on this thread, for C code that needs to
 * know whether its call was delivered (0), refused because the loop or state closed (1),
 * refused as a deadlock (2), made after free (3), or a second call of a one-shot (4). */
__attribute__((visibility("default"))) int lasync_ffi_last_status(void);
int lasync_ffi_last_status(void) { return last_status; }

static void cb_entry(ffi_cif *cif, void *ret, void **args, void *ud);

/* Closure memory is mapped twice from one memory file: a writable view where libffi
 * writes the trampoline and its data, and a read+execute view that C calls. No page is
 * ever writable and executable at once (libffi's own allocator maps pages rwx on this
 * platform). A system that refuses executable mappings makes this return NULL, which
 * the caller turns into a Lua error. Pages are never unmapped: closures live as long as
 * the process, since C may call them at any time. Called with pool_mu held. */
#define CPAGE 16384
static char *cpage_rw, *cpage_rx;
static size_t cpage_used = CPAGE;

static int closure_map(void **rw, void **rx) {
  size_t sz = (sizeof(ffi_closure) + 15) & ~(size_t)15;
  if (cpage_used + sz > CPAGE) {
    int fd = memfd_create("lasync-ffi-closures", MFD_CLOEXEC);
    if (fd < 0) return -1;
    void *w = MAP_FAILED, *x = MAP_FAILED;
    if (ftruncate(fd, CPAGE) == 0) {
      w = mmap(NULL, CPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      x = mmap(NULL, CPAGE, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    }
    close(fd);
    if (w == MAP_FAILED || x == MAP_FAILED) {
      if (w != MAP_FAILED) munmap(w, CPAGE);
      if (x != MAP_FAILED) munmap(x, CPAGE);
      return -1;
    }
    cpage_rw = w;
    cpage_rx = x;
    cpage_used = 0;
  }
  *rw = cpage_rw + cpage_used;
  *rx = cpage_rx + cpage_used;
  cpage_used += sz;
  return 0;
}

/* Takes a slot from the free list (or makes one). Closure allocation failure, as under a
 * W^X policy that refuses executable memory, is reported as NULL, never a crash. */
static cbslot *slot_get(void) {
  pthread_mutex_lock(&pool_mu);
  cbslot *s = pool_free;
  if (s) pool_free = s->next;
  int fail = fail_closures > 0 ? fail_closures-- : 0;
  if (!s && !fail && (s = calloc(1, sizeof *s)) != NULL) {
    void *rw, *rx;
    if (closure_map(&rw, &rx) == 0) {
      s->closure = rw;
      s->code = rx;
      s->allnext = all_slots;
      all_slots = s;
    } else { free(s); s = NULL; }
  }
  pthread_mutex_unlock(&pool_mu);
  return s;
}

/* A freed slot waits in quarantine before it is reused, so that a stale pointer called
 * soon after free finds a dead callback rather than someone else's. */
static void slot_put(cbslot *s) {
  pthread_mutex_lock(&pool_mu);
  s->next = NULL;
  if (quar_tail) quar_tail->next = s; else quar_head = s;
  quar_tail = s;
  if (++quar_n > QUARANTINE) {
    cbslot *o = quar_head;
    quar_head = o->next;
    if (!quar_head) quar_tail = NULL;
    quar_n--;
    o->next = pool_free;
    pool_free = o;
  }
  pthread_mutex_unlock(&pool_mu);
}

/* Prepares a slot for function type ft: its own cif and argument types, then the
 * closure pointing at cb_entry. Raises on failure after returning the slot. */
static void slot_prep(lua_State *L, fstate *S, cbslot *s, int ft, const char *ctx) {
  ctype *c = CT(S->db, ft);
  if (c->flags & CTF_VARARG) { slot_put(s); luaL_error(L, "%s: variadic callbacks are not supported", ctx); }
  if (c->n > s->cap) {
    ffi_type **a = realloc(s->atypes, sizeof(ffi_type *) * (size_t)(c->n + 1));
    if (!a) { slot_put(s); luaL_error(L, "%s: out of memory", ctx); }
    s->atypes = a;
    s->cap = (int)c->n;
  }
  s->nparams = (int)c->n;
  fcif *fc = ffi_getcif(L, S, ft, ctx);  /* validates every type (may raise: slot is not yet live) */
  for (int i = 0; i < s->nparams; i++) s->atypes[i] = fc->atypes[i];
  /* The slot's cif is a copy of the function type's prepared one (ffi_prep_cif computes
   * it from the types alone), pointed at the slot's own type array: the slot outlives the
   * type database, and arming a callback does not classify its arguments again. */
  s->cif = fc->cif;
  s->cif.arg_types = s->atypes;
  if (ffi_prep_closure_loc(s->closure, &s->cif, cb_entry, s, s->code) != FFI_OK) {
    slot_put(s);
    luaL_error(L, "%s: libffi cannot prepare the callback closure", ctx);
  }
}

static int slot_new(lua_State *L, fstate *S, int ft, const char *ctx, cbslot **out) {
  cbslot *s = slot_get();
  if (!s) return luaL_error(L, "%s: cannot allocate a callback closure (the system refused executable memory)", ctx);
  s->fnref = s->futref = LUA_NOREF;
  s->oneshot = s->kill_on_cancel = 0;
  s->heldloop = NULL;
  atomic_fetch_add(&s->gen, 1);
  slot_prep(L, S, s, ft, ctx);
  s->ct = ft;
  atomic_store(&s->fired, 0);
  atomic_store(&s->hub, S->hub);
  atomic_store(&s->state, SL_LIVE);
  *out = s;
  return 0;
}

/* One-shots are anchored in slots of one Lua table recycled through a C free list:
 * arming and spending one costs two table stores rather than luaL_ref's and luaL_unref's
 * walks of the registry. anchor_put pops the value it anchors. */
static int anchor_put(lua_State *L, fstate *S) {
  int i = S->nafree > 0 ? S->afree[--S->nafree] : ++S->anext;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_anchors);
  lua_insert(L, -2);
  lua_rawseti(L, -2, i);
  lua_pop(L, 1);
  return i;
}

static void anchor_push(lua_State *L, fstate *S, int i) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_anchors);
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
}

static void anchor_drop(lua_State *L, fstate *S, int i) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_anchors);
  lua_pushnil(L);
  lua_rawseti(L, -2, i);
  lua_pop(L, 1);
  if (S->nafree == S->capafree) {  /* on failure the index is simply not reused */
    int cap = S->capafree ? 2 * S->capafree : 64;
    int *a = realloc(S->afree, sizeof(int) * (size_t)cap);
    if (!a) return;
    S->afree = a;
    S->capafree = cap;
  }
  S->afree[S->nafree++] = i;
}

/* Kills a live slot: Lua references are dropped (loop thread, state alive) and the slot
 * goes to quarantine; its hub pointer stays, for late calls to find. */
static void slot_kill(lua_State *L, cbslot *s) {
  cbhub *h = atomic_load(&s->hub);
  if (L && s->oneshot) {
    if (s->futref != LUA_NOREF && h && h->S) anchor_drop(L, h->S, s->futref);
  } else if (L) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->fnref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->futref);
  }
  s->fnref = s->futref = LUA_NOREF;
  atomic_store(&s->state, SL_DEAD);
  slot_put(s);
}

/* ---- running the Lua side on the loop thread ---- */

typedef struct runargs { cbslot *s; void **args; void *ret; int rt; } runargs;

static void report(lua_State *L, fstate *S, const char *what) {
  if (S->in_call > 0) {  /* inside a bridge call: the caller raises it once C returns */
    if (S->cb_error_ref == LUA_NOREF) {
      lua_pushvalue(L, -1);
      S->cb_error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return;
  }
  if (api_ok && api.getloop(L)) { api.report(L, -1, what); lua_pop(L, 1); return; }
  fprintf(stderr, "lasync.ffi: error in %s: %s\n", what, luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
}

static void store_ret(lua_State *L, fstate *S, int rt, int idx, void *ret) {
  ctype *c = CT(S->db, rt);
  if (c->kind == CT_VOID) return;
  if (ct_isint(c) && c->size < sizeof(ffi_arg)) {  /* libffi wants small ints widened */
    int64_t v = 0;
    ffi_toc(L, S, idx, rt, &v, "callback result", 0);
    int64_t w = c->size == 1 ? (c->flags & CTF_UNSIGNED || c->kind == CT_BOOL ? (int64_t)(uint8_t)v : (int8_t)v)
              : c->size == 2 ? (c->flags & CTF_UNSIGNED ? (int64_t)(uint16_t)v : (int16_t)v)
              : (c->flags & CTF_UNSIGNED ? (int64_t)(uint32_t)v : (int32_t)v);
    *(ffi_arg *)ret = (ffi_arg)w;
    return;
  }
  ffi_toc(L, S, idx, rt, ret, "callback result", 0);
}

/* Protected body of a callback: the function, the converted arguments, the call, and
 * the conversion of its result (a bad result is an error like any other). */
static int run_protected(lua_State *L) {
  runargs *ra = lua_touserdata(L, 1);
  fstate *S = atomic_load(&ra->s->hub)->S;
  ctype *ft = CT(S->db, ra->s->ct);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ra->s->fnref);
  for (int i = 0; i < ra->s->nparams; i++) ffi_pushval(L, S, S->db->params[ft->aux + i], ra->args[i]);
  lua_call(L, ra->s->nparams, 1);
  store_ret(L, S, ra->rt, -1, ra->ret);
  return 0;
}

/* Completes a one-shot's future with the callback's arguments, which wakes the awaiting
 * task and nothing else: settling through the lasync API skips the future's hook, and
 * there is no done callback, call_soon or Lua call. A future that already finished (it was
 * cancelled) has no waiters left, and then the values are dropped. */
static void resolve(lua_State *L, fstate *S, cbslot *s, void **args) {
  ctype *ft = CT(S->db, s->ct);
  anchor_push(L, S, s->futref);
  int fut = lua_gettop(L);
  for (int i = 0; i < s->nparams; i++) ffi_pushval(L, S, S->db->params[ft->aux + i], args[i]);
  api.settle(L, fut, s->nparams);
  lua_settop(L, fut - 1);
}

static int resolve_protected(lua_State *L) {
  runargs *ra = lua_touserdata(L, 1);
  resolve(L, atomic_load(&ra->s->hub)->S, ra->s, ra->args);
  return 0;
}

/* A one-shot holds the loop it was armed on (which may have closed since: the reference
 * keeps its memory) until its call comes or its future finishes without it. */
static void slot_hold(cbslot *s, las_loop_t *loop) {
  api.ref(loop);
  api.hold(loop);
  s->heldloop = loop;
}

static void slot_unhold(cbslot *s) {
  las_loop_t *loop = s->heldloop;
  if (!loop) return;
  s->heldloop = NULL;
  api.release(loop);
  api.unref(loop);
}

/* A one-shot whose call was delivered is spent: the loop is no longer held for it. */
static void oneshot_spent(lua_State *L, cbslot *s) {
  slot_unhold(s);
  if (atomic_load(&s->state) == SL_LIVE) slot_kill(L, s);
}

/* Runs a callback on the loop thread: a Lua function, or the completion of an awaited
 * future for one-shot slots (after which the slot is spent). */
static int run_on_loop(cbslot *s, void **args, void *ret) {
  fstate *S = atomic_load(&s->hub)->S;
  lua_State *L = S->cbL;
  int top = lua_gettop(L);
  runargs ra = { s, args, ret, CT(S->db, s->ct)->base };
  int isfut = s->futref != LUA_NOREF;
  lua_pushcfunction(L, isfut ? resolve_protected : run_protected);
  lua_pushlightuserdata(L, &ra);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK) report(L, S, isfut ? "ffi awaitable callback" : "ffi callback");
  lua_settop(L, top);
  if (isfut) oneshot_spent(L, s);
  return st == LUA_OK ? ST_OK : ST_ERROR;
}

/* ---- foreign threads ---- */

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, abandoned, status, refs;
  int running;                  /* the loop thread is running this very call */
} waiter;

typedef struct cbmsg {
  struct cbmsg *next;
  cbslot *s;
  lua_Integer gen;              /* the slot's use this call was made to */
  waiter *w;                    /* the caller waits for a result (NULL for void) */
  void *ret;                    /* result buffer inside this message */
  void **args;
  _Alignas(16) char data[];     /* waiter, argument pointers, result, arguments */
} cbmsg;

static void msg_unref(cbmsg *m) {
  waiter *w = m->w;
  if (!w) { free(m); return; }
  pthread_mutex_lock(&w->mu);
  int last = --w->refs == 0;
  pthread_mutex_unlock(&w->mu);
  if (!last) return;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(m);
}

/* A call queued before its callback was freed is reported like a call made after the free
 * (on the loop thread, through the exception handler). */
static void report_freed(cbhub *h) {
  if (h->closed || !h->S) return;
  lua_State *L = h->S->cbL;
  int top = lua_gettop(L);
  lua_pushliteral(L, "ffi callback: called after it was freed");
  report(L, h->S, "ffi callback");
  lua_settop(L, top);
}

static int msg_freed(cbmsg *m) {
  return atomic_load(&m->s->state) != SL_LIVE || atomic_load(&m->s->gen) != m->gen;
}

/* The loop-thread half of a foreign call: runs the callback (unless the caller gave up,
 * the callback was freed, or the state or loop closed) and wakes the caller. */
static void deliver_one(cbmsg *m, int status) {
  cbslot *s = m->s;
  cbhub *h = atomic_load(&s->hub);
  int freed = msg_freed(m);
  int st = freed ? ST_FREED : ST_CLOSED;
  int skip = status != 0 || h->closed || freed;
  waiter *w = m->w;
  int abandoned = 0;
  if (w) {
    pthread_mutex_lock(&w->mu);
    /* A caller that gave up waiting (a suspected deadlock) no longer wants a result, but a
     * one-shot's call still completes its future: the awaiting task must not hang. */
    abandoned = w->abandoned;
    skip |= abandoned && !s->oneshot;
    w->running = !skip;
    pthread_mutex_unlock(&w->mu);
  }
  if (freed && status == 0 && !abandoned) report_freed(h);
  if (!skip) st = run_on_loop(s, m->args, m->ret);
  if (w) {
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->status = st;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
  msg_unref(m);
}

/* A drain's messages without a waiting caller (void callbacks, one-shot completions) run
 * in one protected call per batch rather than one each. */
typedef struct batch { fstate *S; cbmsg *m, *cur; } batch;

static void deliver_done(lua_State *L, fstate *S, cbmsg *m, int ran) {
  if (ran && m->s->futref != LUA_NOREF) oneshot_spent(L, m->s);
  msg_unref(m);
}

static int deliver_protected(lua_State *L) {
  batch *b = lua_touserdata(L, 1);
  fstate *S = b->S;
  int top = lua_gettop(L);
  while (b->m && !b->m->w) {
    cbmsg *m = b->cur = b->m;
    b->m = m->next;
    cbslot *s = m->s;
    int ran = !msg_freed(m);
    if (!ran) {
      lua_pushliteral(L, "ffi callback: called after it was freed");
      report(L, S, "ffi callback");
      lua_settop(L, top);
    } else if (s->futref != LUA_NOREF) {
      resolve(L, S, s, m->args);
    } else {
      ctype *ft = CT(S->db, s->ct);
      lua_rawgeti(L, LUA_REGISTRYINDEX, s->fnref);
      for (int i = 0; i < s->nparams; i++)
        ffi_pushval(L, S, S->db->params[ft->aux + i], m->args[i]);
      lua_call(L, s->nparams, 0);
    }
    b->cur = NULL;
    deliver_done(L, S, m, ran);
    lua_settop(L, top);
  }
  return 0;
}

/* Foreign calls queue in the hub and one post drains the whole queue: a burst of
 * completions from several threads costs one wakeup of the loop, not one each, and one
 * protected call; an error in one callback is reported and the rest still run. */
static void drain(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  cbhub *h = arg;
  pthread_mutex_lock(&h->mu);
  cbmsg *m = h->qhead;
  h->qhead = h->qtail = NULL;
  h->scheduled = 0;
  pthread_mutex_unlock(&h->mu);
  if (status != 0 || h->closed || !h->S) {
    while (m) {
      cbmsg *next = m->next;
      deliver_one(m, status);
      m = next;
    }
    return;
  }
  fstate *S = h->S;
  lua_State *L = S->cbL;
  batch b = { S, m, NULL };
  while (b.m) {
    if (b.m->w) {  /* a caller waits for this one's result: delivered on its own */
      cbmsg *w = b.m;
      b.m = w->next;
      deliver_one(w, status);
      continue;
    }
    int top = lua_gettop(L);
    lua_pushcfunction(L, deliver_protected);
    lua_pushlightuserdata(L, &b);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      if (b.cur) {
        int fut = b.cur->s->futref != LUA_NOREF;
        report(L, S, fut ? "ffi awaitable callback" : "ffi callback");
        deliver_done(L, S, b.cur, 1);
        b.cur = NULL;
      } else report(L, S, "ffi callback");
    }
    lua_settop(L, top);
  }
}

/* Queues m for the loop thread; fails (nonzero) when the state or the loop is closed. */
static int enqueue(cbhub *h, cbmsg *m) {
  int r = 0;
  m->next = NULL;
  pthread_mutex_lock(&h->mu);
  if (h->closed || !h->loop) r = -1;
  else if (h->scheduled || (r = api.post(h->loop, drain, h)) == 0) {
    if (h->qtail) h->qtail->next = m; else h->qhead = m;
    h->qtail = m;
    h->scheduled = 1;
  }
  pthread_mutex_unlock(&h->mu);
  return r;
}

/* Waits for the loop thread to run the call. If the loop thread stays inside one and the
 * same C call for the whole deadlock timeout, it is taken to be waiting for this very
 * thread (a join, a lock): the call is abandoned with ST_DEADLOCK instead of hanging. */
static int wait_result(cbhub *h, waiter *w) {
  long busy0 = atomic_load(&h->busy);
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pthread_mutex_lock(&w->mu);
  while (!w->done) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    if (w->done) break;
    long busy = atomic_load(&h->busy);
    /* The loop thread is busy with this very call (its Lua makes a long C call): no
     * deadlock, however long that takes. */
    if (!busy || busy != busy0 || w->running) {
      busy0 = busy;
      clock_gettime(CLOCK_MONOTONIC, &start);
      continue;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double waited = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9;
    if (waited >= h->deadlock_timeout) {
      w->abandoned = 1;
      w->status = ST_DEADLOCK;
      break;
    }
  }
  int st = w->status;
  pthread_mutex_unlock(&w->mu);
  return st;
}

static void post_report(cbhub *h, const char *text);

#define AL16(n) (((n) + 15) & ~(size_t)15)

/* Copies the arguments (and room for the result) into one message; a void callback
 * returns at once, one with a result waits for the loop thread. */
static void foreign_call(cbslot *s, lua_Integer gen, ffi_cif *cif, void *ret, void **args) {
  cbhub *h = atomic_load(&s->hub);
  size_t rsize = cif->rtype->size < sizeof(ffi_arg) ? sizeof(ffi_arg) : cif->rtype->size;
  int waits = cif->rtype->type != FFI_TYPE_VOID;
  size_t size = sizeof(cbmsg) + (waits ? AL16(sizeof(waiter)) + AL16(rsize) : 0) +
                AL16(sizeof(void *) * cif->nargs);
  for (unsigned i = 0; i < cif->nargs; i++) size += AL16(cif->arg_types[i]->size);
  cbmsg *m = malloc(size);
  if (!m) { last_status = ST_CLOSED; return; }
  char *p = m->data;
  m->s = s;
  m->gen = gen;
  m->w = NULL;
  m->ret = NULL;
  if (waits) {
    waiter *w = m->w = (waiter *)p;
    p += AL16(sizeof(waiter));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->done = w->abandoned = w->status = w->running = 0;
    w->refs = 2;
    m->ret = p;
    memset(p, 0, rsize);
    p += AL16(rsize);
  }
  m->args = (void **)p;
  p += AL16(sizeof(void *) * cif->nargs);
  for (unsigned i = 0; i < cif->nargs; i++) {
    memcpy(p, args[i], cif->arg_types[i]->size);
    m->args[i] = p;
    p += AL16(cif->arg_types[i]->size);
  }
  if (enqueue(h, m) != 0) {
    if (waits) { pthread_mutex_destroy(&m->w->mu); pthread_cond_destroy(&m->w->cv); }
    free(m);
    last_status = ST_CLOSED;
    return;
  }
  if (!waits) { last_status = ST_OK; return; }
  int st = wait_result(h, m->w);
  if (st == ST_OK) memcpy(ret, m->ret, rsize);
  else if (st == ST_DEADLOCK)
    post_report(h, "ffi callback: a call from another thread would deadlock (the loop thread is blocked"
                " in a C call, waiting for that thread?); it returned 0");
  last_status = st;
  msg_unref(m);
}

typedef struct reportmsg { cbhub *h; char text[160]; } reportmsg;

static void report_cb(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  reportmsg *r = arg;
  if (status == 0 && !r->h->closed && r->h->S) {
    lua_State *L = r->h->S->cbL;
    lua_pushstring(L, r->text);
    report(L, r->h->S, "ffi callback");
  } else fprintf(stderr, "lasync.ffi: %s\n", r->text);
  free(r);
}

/* Misuse seen on a foreign thread is reported on the loop thread, through the loop's
 * exception handler like any other callback error (stderr if the loop is gone). */
static void post_report(cbhub *h, const char *text) {
  reportmsg *r = h ? malloc(sizeof *r) : NULL;
  int ok = 0;
  if (r) {
    r->h = h;
    snprintf(r->text, sizeof r->text, "%s", text);
    pthread_mutex_lock(&h->mu);
    ok = !h->closed && h->loop && api.post(h->loop, report_cb, r) == 0;
    pthread_mutex_unlock(&h->mu);
  }
  if (!ok) { fprintf(stderr, "lasync.ffi: %s\n", text); free(r); }
}

/* The one entry point of every closure. */
static void cb_entry(ffi_cif *cif, void *ret, void **args, void *ud) {
  cbslot *s = ud;
  lua_Integer gen = atomic_load(&s->gen); /* before the state: a use seen live is this one */
  if (cif->rtype->type != FFI_TYPE_VOID)
    memset(ret, 0, cif->rtype->size < sizeof(ffi_arg) ? sizeof(ffi_arg) : cif->rtype->size);
  cbhub *h = atomic_load(&s->hub);
  int onloop = h && pthread_equal(pthread_self(), h->owner) && !h->closed && h->S;
  if (atomic_load(&s->state) != SL_LIVE) {
    last_status = ST_FREED;
    if (onloop) {
      lua_State *L = h->S->cbL;
      lua_pushliteral(L, "ffi callback: called after it was freed");
      report(L, h->S, "ffi callback");
    } else post_report(h, "ffi callback: called after it was freed");
    return;
  }
  if (s->oneshot && atomic_exchange(&s->fired, 1)) {
    last_status = ST_TWICE;
    if (onloop) {
      lua_State *L = h->S->cbL;
      lua_pushliteral(L, "ffi awaitable: the one-shot callback was called a second time (ignored)");
      report(L, h->S, "ffi awaitable callback");
    } else post_report(h, "ffi awaitable: the one-shot callback was called a second time (ignored)");
    return;
  }
  if (onloop) last_status = run_on_loop(s, args, ret);
  else if (pthread_equal(pthread_self(), h->owner)) last_status = ST_CLOSED;
  else foreign_call(s, gen, cif, ret, args);
}

/* ---- Lua API: callbacks ---- */

static const char *wrappers;

/* Callback handles are cdata of the function-pointer type whose payload holds the code
 * address followed by the slot, flagged so that :free() and :set() can find it. */
#define CDF_CALLBACK 2

void *ffi_cb_new(lua_State *L, fstate *S, int idx, int ct, int temporary) {
  idx = lua_absindex(L, idx);
  int ft = CT(S->db, ct)->base;
  cbslot *s;
  hub_bind(L, S);
  slot_new(L, S, ft, temporary ? "C function call" : "ffi.cast", &s);
  lua_pushvalue(L, idx);
  s->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
  cdata *cd = ffi_newcdata(L, S, ct_unqual(S->db, ct), 2 * sizeof(void *));
  cd->flags |= CDF_CALLBACK;
  ((void **)cd->p)[0] = s->code;
  ((void **)cd->p)[1] = s;
  if (temporary) {  /* freed when the call returns: kept in the temporaries table */
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_temps);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, ++S->ntemps);
    lua_pop(L, 1);
  }
  return s->code;
}

void ffi_cb_release_temps(lua_State *L, fstate *S, int mark) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_temps);
  for (int i = S->ntemps; i > mark; i--) {
    lua_rawgeti(L, -1, i);
    cdata *cd = lua_touserdata(L, -1);
    cbslot *s = ((void **)cd->p)[1];
    if (s && atomic_load(&s->state) == SL_LIVE) slot_kill(L, s);
    ((void **)cd->p)[1] = NULL;
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pop(L, 1);
  S->ntemps = mark;
}

void ffi_cb_loop_enter(fstate *S) {
  if (S->in_call++ == 0) atomic_store_explicit(S->busy, ++S->seq, memory_order_release);
}

void ffi_cb_loop_leave(fstate *S) {
  if (--S->in_call == 0) atomic_store_explicit(S->busy, 0, memory_order_release);
}

static cbslot *checkhandle(lua_State *L, fstate *S, int idx, const char *ctx) {
  cdata *cd = ffi_tocdata(L, S, idx);
  if (!cd || !(cd->flags & CDF_CALLBACK)) luaL_error(L, "%s: callback expected (made by ffi.cast from a Lua function)", ctx);
  cbslot *s = ((void **)cd->p)[1];
  if (!s) luaL_error(L, "%s: callback already freed", ctx);
  return s;
}

/* cb:free(): the Lua function is released at once; the trampoline stays valid, so a C
 * library that still calls it gets a reported error and a zero result, not a crash. */
static int cb_free(lua_State *L) {
  fstate *S = ffi_state(L);
  cbslot *s = checkhandle(L, S, 1, "callback:free");
  cdata *cd = ffi_tocdata(L, S, 1);
  ((void **)cd->p)[1] = NULL;
  if (atomic_load(&s->state) == SL_LIVE) slot_kill(L, s);
  return 0;
}

static int cb_set(lua_State *L) {
  fstate *S = ffi_state(L);
  cbslot *s = checkhandle(L, S, 1, "callback:set");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_rawseti(L, LUA_REGISTRYINDEX, s->fnref);
  return 0;
}


/* Methods of function cdata: :free() and :set() on callbacks, :to_thread(...) and
 * :awaitable(opts) on any C function. */
int ffi_cd_method(lua_State *L, fstate *S, cdata *cd);
int ffi_cd_method(lua_State *L, fstate *S, cdata *cd) {
  (void)cd;
  const char *k = lua_tostring(L, 2);
  if (!strcmp(k, "awaitable") || !strcmp(k, "to_thread")) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, (void *)&wrappers);
    lua_getfield(L, -1, k[0] == 'a' ? "__ffi_awaitable" : "to_thread");
    return 1;
  }
  lua_CFunction f = !strcmp(k, "free") ? cb_free : !strcmp(k, "set") ? cb_set : NULL;
  if (!f) return luaL_error(L, "cdata index: function cdata has no member '%s'", k);
  lua_pushvalue(L, lua_upvalueindex(1));
  (void)S;
  lua_pushcclosure(L, f, 1);
  return 1;
}

/* ---- awaitables ---- */

/* Future.cancel, looked up once (from a sample future) for `never`. */
static void get_cancel(lua_State *L, fstate *S) {
  if (S->ref_cancel != LUA_NOREF) return;
  api.newfuture(L, 0, NULL, NULL);
  lua_getfield(L, -1, "cancel");
  S->ref_cancel = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
}

/* Whether s is still the live one-shot of this state that the token names. */
static int slot_is(fstate *S, cbslot *s, lua_Integer tok) {
  return s && atomic_load(&s->state) == SL_LIVE && atomic_load(&s->hub) == S->hub && s->oneshot &&
         atomic_load(&s->gen) == tok;
}

/* The awaiting side is done with a one-shot (its future finished or was given up): the
 * loop is no longer held for it. With `kill` the C side promised not to call, so the slot
 * is freed; otherwise it stays armed for a late call. */
static void slot_release(lua_State *L, cbslot *s, int kill) {
  slot_unhold(s);
  if (kill && !atomic_load(&s->fired)) slot_kill(L, s);
}

/* The hook of an armed one-shot's future: it finished before the C side called (it was
 * cancelled, or Lua set it), since a completion settles it without calling the hook. The
 * hold goes, and the slot too when the C side promised never to call after a cancel. The
 * slot may have been spent and reused since: it is still this future's only if it is live
 * and anchors this very future. */
static void os_hook(lua_State *L, int fut, int state, void *ud) {
  cbslot *s = ud;
  cbhub *h = atomic_load(&s->hub);
  fstate *S = h ? h->S : NULL;
  /* Slots come from a process-wide pool: this one may serve another Lua state by now. */
  if (!S || S->universe != lua_topointer(L, LUA_REGISTRYINDEX)) return;
  if (atomic_load(&s->state) != SL_LIVE || !s->oneshot || s->futref == LUA_NOREF) return;
  lua_checkstack(L, 3);
  anchor_push(L, S, s->futref);
  int mine = lua_rawequal(L, -1, fut);
  lua_pop(L, 1);
  if (mine) slot_release(L, s, s->kill_on_cancel && state == LAS_CANCELLED);
}

/* Makes the future that one-shot slot s completes, anchored while the slot is armed, and
 * holds the loop until the C side calls. Leaves the future on the stack. */
static void arm_future(lua_State *L, fstate *S, cbslot *s, las_loop_t *loop, int kill_on_cancel) {
  s->oneshot = 1;
  s->kill_on_cancel = kill_on_cancel;
  api.newfuture(L, s->nparams, os_hook, s);
  lua_pushvalue(L, -1);
  s->futref = anchor_put(L, S);
  slot_hold(s, loop);
}

/* start(cfunc, cbindex, kill_on_cancel, args...): makes a future, arms a one-shot slot
 * bound to it and calls cfunc with the slot's code in parameter cbindex. Returns the C
 * result, a token (slot, generation) for release() when the check refuses the start, and
 * the future to await. */
static int aw_start(lua_State *L) {
  fstate *S = ffi_state(L);
  int ft;
  ffi_checkfunc(L, S, 1, &ft, "ffi.awaitable");
  ctype *c = CT(S->db, ft);
  int cbi = (int)luaL_checkinteger(L, 2) - 1;
  int kill_on_cancel = lua_toboolean(L, 3);
  int pt = S->db->params[c->aux + cbi];
  las_loop_t *loop = hub_bind(L, S);
  if (!loop) return luaL_error(L, "ffi.awaitable: no running lasync loop (call it inside lasync.run)");
  int nargs = lua_gettop(L) - 3 + 1;
  cbslot *s;
  slot_new(L, S, CT(S->db, pt)->base, "ffi.awaitable", &s);
  arm_future(L, S, s, loop, kill_on_cancel);
  int fut = lua_gettop(L);
  lua_pushvalue(L, 1);
  for (int i = 0, j = 4; i < nargs; i++) {
    if (i == cbi) lua_pushlightuserdata(L, s->code);
    else lua_pushvalue(L, j++);
  }
  if (lua_pcall(L, nargs, 1, 0) != LUA_OK) {  /* the C side never got the callback */
    if (atomic_load(&s->state) == SL_LIVE && !atomic_load(&s->fired)) {
      slot_unhold(s);
      slot_kill(L, s);
    }
    return lua_error(L);
  }
  lua_pushlightuserdata(L, s);
  lua_pushinteger(L, atomic_load(&s->gen));
  lua_pushvalue(L, fut);
  return 4;
}

/* `never`, as ffi.oneshot returns it (upvalues: state, slot, token, future): the C side
 * will not call, so the slot is freed and the future cancelled. Harmless once the call came
 * or `never` ran before. */
static int os_never(lua_State *L) {
  fstate *S = ffi_state(L);
  cbslot *s = lua_touserdata(L, lua_upvalueindex(2));
  if (slot_is(S, s, lua_tointeger(L, lua_upvalueindex(3)))) slot_release(L, s, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cancel);
  lua_pushvalue(L, lua_upvalueindex(4));
  lua_call(L, 1, 0);
  return 0;
}

/* ffi.oneshot(ct): a one-shot callback of function-pointer type ct, for APIs that take
 * their callback inside a struct (a sigevent) rather than as a parameter. Returns the
 * function pointer, the future its call completes and `never`. */
static int os_new(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct = ffi_checkct(L, S, 1, "ffi.oneshot");
  ctype *c = CT(S->db, ct);
  if (c->kind != CT_PTR || CT(S->db, c->base)->kind != CT_FUNC)
    return luaL_error(L, "ffi.oneshot: function pointer type expected");
  las_loop_t *loop = hub_bind(L, S);
  if (!loop) return luaL_error(L, "ffi.oneshot: no running lasync loop (call it inside lasync.run)");
  get_cancel(L, S);
  cbslot *s;
  slot_new(L, S, c->base, "ffi.oneshot", &s);
  arm_future(L, S, s, loop, 0);
  int fut = lua_gettop(L);
  cdata *cd = ffi_newcdata(L, S, ct_unqual(S->db, ct), sizeof(void *));
  *(void **)cd->p = s->code;
  lua_pushvalue(L, fut);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, s);
  lua_pushinteger(L, atomic_load(&s->gen));
  lua_pushvalue(L, fut);
  lua_pushcclosure(L, os_never, 4);
  return 3;
}

/* release(slot, token, never): the awaiting side gives up on an operation (the start
 * check refused it). */
static int aw_release(lua_State *L) {
  fstate *S = ffi_state(L);
  cbslot *s = lua_touserdata(L, 1);
  lua_Integer tok = luaL_checkinteger(L, 2);
  if (slot_is(S, s, tok)) slot_release(L, s, lua_toboolean(L, 3));
  return 0;
}

/* ---- blocking calls on the thread pool ---- */

typedef union jslot { int64_t i; double d; void *p; long double ld; } jslot;

typedef struct job {
  uv_work_t req;
  cbhub *h;                     /* never freed: tells whether the state is still there */
  las_loop_t *loop;             /* referenced, and counted as work in flight (which the
                                   end of a run waits for), until the job is done */
  ffi_cif *cif;
  ffi_cif vcif;
  void (*fn)(void);
  int rt, futref, anchor, err;
  void *av[FFI_MAXARGS];
  ffi_type *vt[FFI_MAXARGS];
  jslot slots[FFI_MAXARGS];
  jslot rbuf[2];
  void *rv;
} job;

static void work_cb(uv_work_t *req) {
  job *j = req->data;
  cbhub *h = j->h;
  pthread_mutex_lock(&h->mu);
  int run = !h->closed;
  if (run) h->jobs++;
  pthread_mutex_unlock(&h->mu);
  if (!run) return;
  ffi_call(j->cif, j->fn, j->rv, j->av);
  j->err = errno;
  pthread_mutex_lock(&h->mu);
  if (--h->jobs == 0 && h->closed) pthread_cond_broadcast(&h->jobs_cv);
  pthread_mutex_unlock(&h->mu);
}

static int after_protected(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  fstate *S = j->h->S;
  lua_rawgeti(L, LUA_REGISTRYINDEX, j->futref);
  int fut = lua_gettop(L);
  ctype *rc = CT(S->db, j->rt);
  if (rc->kind == CT_VOID) { api.settle(L, fut, 0); return 0; }
  if (ct_isint(rc) && rc->size < sizeof(ffi_arg)) {
    int64_t v = (rc->flags & CTF_UNSIGNED) || rc->kind == CT_BOOL ? (int64_t)(ffi_arg)j->rbuf[0].i : (int64_t)(ffi_sarg)j->rbuf[0].i;
    memcpy(j->rbuf, &v, 8);  /* little-endian: the low bytes are the value */
  }
  if (rc->kind == CT_STRUCT || rc->kind == CT_UNION) {
    cdata *cd = ffi_newcdata(L, S, ct_unqual(S->db, j->rt), rc->size);
    memcpy(cd->p, j->rv, rc->size);
  } else ffi_pushc(L, S, j->rt, j->rv, 0);
  api.settle(L, fut, 1);  /* dropped if the awaiting side gave up */
  return 0;
}

/* The job's memory is C's, not Lua's: the state may have closed (lua_close while the
 * host keeps running its loop) by the time libuv hands the job back. */
static void after_cb(uv_work_t *req, int status) {
  (void)status;
  job *j = req->data;
  cbhub *h = j->h;
  if (!h->closed && h->S) {
    fstate *S = h->S;
    lua_State *L = S->cbL;
    S->saved_errno = j->err;
    lua_pushcfunction(L, after_protected);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) report(L, S, "ffi.to_thread");
    luaL_unref(L, LUA_REGISTRYINDEX, j->futref);
    luaL_unref(L, LUA_REGISTRYINDEX, j->anchor);
  }
  api.work_end(j->loop);
  api.unref(j->loop);
  free(j);
}

/* Fills the job (light userdata at 1) from (fut, cfunc, args...) at 2...: converts the
 * arguments into an anchor table that keeps them (strings, buffers) alive until the call
 * returns, and leaves the anchor on the stack. Raises on bad arguments. */
static int tt_fill(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  lua_remove(L, 1);
  fstate *S = ffi_state(L);
  int ft;
  void *fn = ffi_checkfunc(L, S, 2, &ft, "ffi.to_thread");
  ctype *c = CT(S->db, ft);
  fcif *fc = ffi_getcif(L, S, ft, "ffi.to_thread");
  int nargs = lua_gettop(L) - 2;
  if (nargs != fc->nparams && !((c->flags & CTF_VARARG) && nargs > fc->nparams))
    return luaL_error(L, "ffi.to_thread: wrong number of arguments (expected %d, got %d)", fc->nparams, nargs);
  if (nargs > FFI_MAXARGS) return luaL_error(L, "ffi.to_thread: too many arguments");
  lua_createtable(L, nargs + 2, 0);  /* the anchor: arguments, big buffers */
  int anchor = lua_gettop(L);
  j->fn = FFI_FN(fn);
  j->rt = c->base;
  j->cif = &fc->cif;
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, i + 3);
    lua_rawseti(L, anchor, i + 2);
    int pt;
    if (i < fc->nparams) { pt = S->db->params[c->aux + i]; j->vt[i] = fc->atypes[i]; }
    else {
      cdata *cd = ffi_tocdata(L, S, i + 3);
      int t = lua_type(L, i + 3);
      pt = t == LUA_TNUMBER ? (lua_isinteger(L, i + 3) ? S->db->t_i64 : S->db->t_double) :
           t == LUA_TSTRING ? S->db->t_ccharp : cd ? cd->ct : S->db->t_voidp;
      if (cd && CT(S->db, pt)->kind == CT_ARRAY) pt = S->db->t_voidp;
      j->vt[i] = ffi_typeof(L, S, pt, "ffi.to_thread");
    }
    ctype *p = CT(S->db, pt);
    j->av[i] = &j->slots[i];
    if (p->size > sizeof(jslot)) {
      j->av[i] = lua_newuserdatauv(L, p->size, 0);
      lua_rawseti(L, anchor, nargs + 2 + i);
    }
    ffi_toc(L, S, i + 3, pt, j->av[i], "ffi.to_thread", 0);
  }
  if (nargs > fc->nparams) {
    if (ffi_prep_cif_var(&j->vcif, FFI_DEFAULT_ABI, (unsigned)fc->nparams, (unsigned)nargs, fc->cif.rtype, j->vt) != FFI_OK)
      return luaL_error(L, "ffi.to_thread: libffi cannot prepare this variadic call");
    j->cif = &j->vcif;
  }
  ctype *rc = CT(S->db, c->base);
  j->rv = j->rbuf;
  if (rc->size > sizeof j->rbuf) {
    j->rv = lua_newuserdatauv(L, rc->size, 0);
    lua_rawseti(L, anchor, 2 * nargs + 3);
  }
  return 1;
}

/* start(fut, cfunc, args...): converts the arguments on the loop thread into a job, then
 * queues the call on the libuv thread pool. */
static int tt_start(lua_State *L) {
  fstate *S = ffi_state(L);
  las_loop_t *loop = hub_bind(L, S);
  if (!loop) return luaL_error(L, "ffi.to_thread: no running lasync loop (call it inside lasync.run)");
  job *j = calloc(1, sizeof *j);
  if (!j) return luaL_error(L, "ffi.to_thread: out of memory");
  int n = lua_gettop(L);
  luaL_checkstack(L, n + 3, "ffi.to_thread: too many arguments");
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, tt_fill, 1);
  lua_pushlightuserdata(L, j);
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  if (lua_pcall(L, n + 1, 1, 0) != LUA_OK) {
    free(j);
    return lua_error(L);
  }
  j->h = S->hub;
  j->req.data = j;
  j->loop = loop;
  if (uv_queue_work(api.uv(loop), &j->req, work_cb, after_cb) != 0) {
    free(j);
    return luaL_error(L, "ffi.to_thread: cannot queue work on the thread pool");
  }
  api.ref(loop);
  api.work_begin(loop);
  j->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  j->futref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* The Lua halves: lasync futures are made and awaited through the pinned Lua API. */
static const char *wrappers =
  "local aw_start, aw_release, tt_start = ...\n"
  "local lasync\n"
  "local function future()\n"
  "  lasync = lasync or require 'lasync'\n"
  "  return lasync.future()\n"
  "end\n"
  "local M = {}\n"
  "function M.awaitable(fn, opts)\n"
  "  opts = opts or {}\n"
  "  local idx, check = opts.callback, opts.check\n"
  "  local never_on_cancel = opts.never_on_cancel and true or false\n"
  "  return function(...)\n"
  "    local ret, slot, tok, fut = aw_start(fn, idx, never_on_cancel, ...)\n"
  "    if check and not check(ret) then\n"
  "      aw_release(slot, tok, true)\n"
  "      fut:cancel()\n"
  "      return nil, ret\n"
  "    end\n"
  "    return fut:await()\n"
  "  end\n"
  "end\n"
  "function M.to_thread(fn, ...)\n"
  "  local fut = future()\n"
  "  tt_start(fut, fn, ...)\n"
  "  return fut:await()\n"
  "end\n"
  "return M\n";

/* ffi.awaitable(cfunc [, opts]) checks the function and finds its callback parameter
 * (opts.callback, else the only function-pointer parameter), then defers to the Lua half. */
static int f_awaitable(lua_State *L) {
  fstate *S = ffi_state(L);
  int ft;
  ffi_checkfunc(L, S, 1, &ft, "ffi.awaitable");
  ctype *c = CT(S->db, ft);
  int idx = -1;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "callback") != LUA_TNIL) {
    idx = (int)luaL_checkinteger(L, -1) - 1;
    if (idx < 0 || idx >= c->n) return luaL_error(L, "ffi.awaitable: callback index %d out of range", idx + 1);
  } else {
    for (int i = 0; i < c->n; i++) {
      ctype *p = CT(S->db, S->db->params[c->aux + i]);
      if (p->kind == CT_PTR && CT(S->db, p->base)->kind == CT_FUNC) {
        if (idx >= 0) return luaL_error(L, "ffi.awaitable: several callback parameters; say which with opts.callback");
        idx = i;
      }
    }
    if (idx < 0) return luaL_error(L, "ffi.awaitable: the function has no callback parameter");
  }
  ctype *p = CT(S->db, S->db->params[c->aux + idx]);
  if (p->kind != CT_PTR || CT(S->db, p->base)->kind != CT_FUNC)
    return luaL_error(L, "ffi.awaitable: parameter %d is not a function pointer", idx + 1);
  lua_settop(L, 2);
  lua_newtable(L);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "check"); lua_setfield(L, 3, "check");
    lua_getfield(L, 2, "never_on_cancel"); lua_setfield(L, 3, "never_on_cancel");
  }
  lua_pushinteger(L, idx + 1);
  lua_setfield(L, 3, "callback");
  lua_getfield(L, lua_upvalueindex(2), "awaitable");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_call(L, 2, 1);
  return 1;
}

/* ffi.hold(): keeps the running loop alive while C code that will call back from its own
 * threads is at work (plain callbacks do not hold it; awaitables and to_thread do).
 * The guard's :release() is idempotent and also runs as __close and __gc. */
typedef struct guard { las_loop_t *loop; } guard;

static int guard_release(lua_State *L) {
  guard *g = luaL_checkudata(L, 1, "lasync.ffi.hold");
  if (g->loop) { api.release(g->loop); api.unref(g->loop); g->loop = NULL; }
  return 0;
}

static int f_hold(lua_State *L) {
  fstate *S = ffi_state(L);
  las_loop_t *loop = hub_bind(L, S);
  if (!loop) return luaL_error(L, "ffi.hold: no running lasync loop (call it inside lasync.run)");
  guard *g = lua_newuserdatauv(L, sizeof(guard), 0);
  g->loop = NULL;
  if (luaL_newmetatable(L, "lasync.ffi.hold")) {
    lua_pushcfunction(L, guard_release);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__close");
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__gc");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "release");
    lua_setfield(L, -3, "__index");
    lua_pop(L, 1);
  }
  lua_setmetatable(L, -2);
  api.ref(loop);
  api.hold(loop);
  g->loop = loop;
  return 1;
}

static int f_debug_fail_closures(lua_State *L) {
  pthread_mutex_lock(&pool_mu);
  fail_closures = (int)luaL_checkinteger(L, 1);
  pthread_mutex_unlock(&pool_mu);
  return 0;
}

static int f_deadlock_timeout(lua_State *L) {
  fstate *S = ffi_state(L);
  double old = S->hub->deadlock_timeout;
  if (!lua_isnoneornil(L, 1)) S->hub->deadlock_timeout = luaL_checknumber(L, 1);
  lua_pushnumber(L, old);
  return 1;
}

static int f_last_status(lua_State *L) {
  lua_pushinteger(L, last_status);
  return 1;
}

void ffi_cb_open(lua_State *L, fstate *S) {
  cbhub *h = calloc(1, sizeof *h);
  if (!h) luaL_error(L, "lasync.ffi: out of memory");
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->jobs_cv, NULL);
  h->owner = pthread_self();
  h->deadlock_timeout = 1.0;
  h->S = S;
  pthread_mutex_lock(&pool_mu);
  h->next = all_hubs;
  all_hubs = h;
  pthread_mutex_unlock(&pool_mu);
  S->hub = h;
  S->busy = &h->busy;
  S->cbL = lua_newthread(L);
  S->ref_cbL = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->ref_temps = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->ref_anchors = luaL_ref(L, LUA_REGISTRYINDEX);
  S->ref_cancel = LUA_NOREF;
  S->universe = lua_topointer(L, LUA_REGISTRYINDEX);
  if (load_api(L)) api.watch_loop(L, hub_follow, h);
}

/* The state is closing: from now on foreign threads get ST_CLOSED; closures stay valid
 * (C may still call them) but no longer reach Lua, and the loop reference is dropped
 * under the hub lock, so no post can race with it. */
void ffi_cb_close(fstate *S) {
  cbhub *h = S->hub;
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->closed = 1;
  h->S = NULL;
  las_loop_t *loop = h->loop;
  h->loop = NULL;
  /* C functions still running on the thread pool read Lua memory (their arguments, the
   * call's description): the state cannot go before they return. Queued ones will not run. */
  while (h->jobs > 0) pthread_cond_wait(&h->jobs_cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
  /* One-shots still armed will never reach this state again: their loops go free. */
  pthread_mutex_lock(&pool_mu);
  for (cbslot *s = all_slots; s; s = s->allnext)
    if (atomic_load(&s->hub) == h) slot_unhold(s);
  pthread_mutex_unlock(&pool_mu);
  if (loop && api_ok) api.unref(loop);
  S->hub = NULL;
  free(S->afree);
  S->afree = NULL;
  S->nafree = S->capafree = 0;
}

void ffi_cb_functions(lua_State *L, fstate *S, int sidx) {
  (void)S;
  sidx = lua_absindex(L, sidx);
  int mod = lua_gettop(L);
  if (luaL_loadbuffer(L, wrappers, strlen(wrappers), "=lasync.ffi") != LUA_OK) lua_error(L);
  lua_pushvalue(L, sidx); lua_pushcclosure(L, aw_start, 1);
  lua_pushvalue(L, sidx); lua_pushcclosure(L, aw_release, 1);
  lua_pushvalue(L, sidx); lua_pushcclosure(L, tt_start, 1);
  lua_call(L, 3, 1);
  int w = lua_gettop(L);
  lua_pushvalue(L, w);
  lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&wrappers);
  lua_getfield(L, w, "to_thread");
  lua_setfield(L, mod, "to_thread");
  lua_pushvalue(L, sidx);
  lua_pushcclosure(L, os_new, 1);
  lua_setfield(L, mod, "oneshot");
  lua_pushvalue(L, sidx);
  lua_pushvalue(L, w);
  lua_pushcclosure(L, f_awaitable, 2);
  lua_pushvalue(L, -1);
  lua_setfield(L, mod, "awaitable");
  lua_setfield(L, w, "__ffi_awaitable");
  lua_settop(L, mod);
  static const luaL_Reg fs[] = {
    { "debug_fail_closures", f_debug_fail_closures }, { "deadlock_timeout", f_deadlock_timeout },
    { "last_status", f_last_status }, { "hold", f_hold }, { NULL, NULL }
  };
  lua_pushvalue(L, sidx);
  luaL_setfuncs(L, fs, 1);
}
