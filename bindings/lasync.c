/* lasync.c - the Lua module: futures and tasks as userdata, await through lua_yieldk. */
#include "lasync_int.h"

#include <lualib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "Task-N" numbering is process-wide, as asyncio's is. */
static atomic_llong task_counter;

#define getS(L) ((lstate *)lua_touserdata(L, lua_upvalueindex(1)))

/* --------------------------------------------------------------------------------- errors */

static void push_traceback(lua_State *L, lua_State *of, const char *msg, int level) {
  luaL_traceback(L, of, msg, level);
}

/* A CancelledError the runtime raises is control flow, not a bug: it gets no traceback, so
 * cancelling a million tasks at shutdown does not build a million traceback strings (reading
 * err.traceback still gives a string, made then: err_index). */
static void push_cancel_error(lua_State *L, lstate *S, const char *msg) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->cls_cancelled);
  lua_setmetatable(L, -2);
}

void lasync__push_error(lua_State *L, lstate *S, int cls, const char *msg) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  push_traceback(L, L, msg, 1);
  lua_setfield(L, -2, "traceback");
  lua_rawgeti(L, LUA_REGISTRYINDEX, cls);
  lua_setmetatable(L, -2);
}

static int err_new(lua_State *L) {
  /* cls(msg): called through the class's metatable __call. */
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *msg = luaL_optstring(L, 2, NULL);
  if (!msg) {
    lua_getfield(L, 1, "name");
    msg = lua_tostring(L, -1);
    if (!msg) msg = "error";
  }
  lua_createtable(L, 0, 2);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  push_traceback(L, L, msg, 1);
  lua_setfield(L, -2, "traceback");
  lua_pushvalue(L, 1);
  lua_setmetatable(L, -2);
  return 1;
}

static int err_tostring(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "name");
  lua_getfield(L, 1, "message");
  const char *name = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
  if (!name) name = "Error";
  /* cls() takes the class name as its message: "TimeoutError", not "TimeoutError: TimeoutError" */
  if (msg && *msg && strcmp(msg, name) != 0) lua_pushfstring(L, "%s: %s", name, msg);
  else lua_pushstring(L, name);
  return 1;
}

/* CancelledError's __index: the class's fields, and a traceback even for an instance that
 * carries none (one lasync raised: see push_cancel_error). It is made when read, so those
 * errors keep costing nothing; lasync itself reads the field raw and still sees none. */
static int err_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "traceback") != 0) return 0;
  lua_getfield(L, lua_upvalueindex(1), "name");
  lua_pushliteral(L, "message");
  lua_rawget(L, 1);
  const char *name = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
  lua_pushfstring(L, "%s: %s\n(raised by lasync at the await where the task was cancelled; no "
                     "stack traceback is kept for a cancellation)",
                  name ? name : "Error", msg ? msg : "");
  return 1;
}

static int make_class(lua_State *L, const char *name, bool lazy_tb) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  lua_pushfstring(L, "lasync.%s", name);
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, err_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushvalue(L, -1);
  if (lazy_tb) lua_pushcclosure(L, err_index, 1);
  lua_setfield(L, -2, "__index");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, err_new);
  lua_setfield(L, -2, "__call");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static bool is_instance(lua_State *L, int idx, int cls) {
  if (!lua_getmetatable(L, idx)) return false;
  lua_rawgeti(L, LUA_REGISTRYINDEX, cls);
  bool r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

static int l_is_cancelled(lua_State *L) {
  lua_pushboolean(L, is_instance(L, 1, getS(L)->cls_cancelled));
  return 1;
}

/* lasync.traceback(err) -> the traceback of the task where err was raised, with the chain of
 * tasks it was awaited through, or nil: a table error carries it as err.traceback; for a
 * string error lasync keeps it by value (the most recent errors only). */
static int l_traceback(lua_State *L) {
  lstate *S = getS(L);
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_pushliteral(L, "traceback");
    lua_rawget(L, 1);
    return 1;
  }
  if (lua_type(L, 1) != LUA_TSTRING) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->strtb);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TTABLE) return 0;
  lua_getfield(L, -1, "tb");
  return 1;
}

static int l_is_timeout(lua_State *L) {
  lua_pushboolean(L, is_instance(L, 1, getS(L)->cls_timeout));
  return 1;
}

static int tostring_k(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Pushes a string for any value, even one whose __tostring fails or returns a non-string:
 * errors must be reportable whatever they are. */
void lasync__safe_tostring(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, tostring_k);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *why = lua_tostring(L, -1);
    lua_pushfstring(L, "(error object is a %s whose __tostring failed: %s)", luaL_typename(L, idx),
                    why ? why : "?");
    lua_remove(L, -2);
  }
}

/* ---------------------------------------------------------------------------------- boxes */

lfut *lasync__tofut(lua_State *L, int idx) {
  lfut *fu = lua_touserdata(L, idx);
  if (!fu || lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) < sizeof(lfut) ||
      fu->magic != LFUT_MAGIC)
    return NULL;
  return fu;
}

static lfut *checkfut(lua_State *L, int idx, const char *fname) {
  lfut *fu = lasync__tofut(L, idx);
  if (!fu) luaL_error(L, "%s: expected a Future or Task, got %s", fname, luaL_typename(L, idx));
  return fu;
}

static ltask *checktask(lua_State *L, int idx, const char *fname) {
  lfut *fu = lasync__tofut(L, idx);
  if (!fu || fu->kind != K_TASK) luaL_error(L, "%s: expected a Task, got %s", fname, luaL_typename(L, idx));
  return (ltask *)fu;
}

static lfut *new_box(lua_State *L, lstate *S, size_t size, int nuv, int kind, int mt) {
  lfut *fu = lua_newuserdatauv(L, size, nuv);
  memset(fu, 0, size);
  fu->magic = LFUT_MAGIC;
  fu->kind = (unsigned char)kind;
  fu->S = S;
  lua_rawgeti(L, LUA_REGISTRYINDEX, mt);
  lua_setmetatable(L, -2);
  return fu;
}

/* Keeps the value at idx reachable while C holds a pointer into it (a pending task, a
 * queued callback); returns the slot to release it with. */
int lasync__anchor(lua_State *L, lstate *S, int idx) {
  idx = lua_absindex(L, idx);
  int slot = S->nfree > 0 ? S->freeslots[--S->nfree] : S->nextslot++;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  return slot;
}

static void free_slot(lstate *S, int slot) {
  if (S->nfree == S->capfree) {
    int cap = S->capfree ? S->capfree * 2 : 256;
    int *n = realloc(S->freeslots, (size_t)cap * sizeof *n);
    if (!n) return; /* the slot number is merely not reused */
    S->freeslots = n;
    S->capfree = cap;
  }
  S->freeslots[S->nfree++] = slot;
}

void lasync__unanchor(lua_State *L, lstate *S, int ref) {
  if (ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_pushnil(L);
  lua_rawseti(L, -2, ref);
  lua_pop(L, 1);
  free_slot(S, ref);
}

/* Pushes the anchored value and releases its slot. */
void lasync__take_anchored(lua_State *L, lstate *S, int ref) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_rawgeti(L, -1, ref);
  lua_pushnil(L);
  lua_rawseti(L, -3, ref);
  lua_remove(L, -2);
  free_slot(S, ref);
}

/* A fresh anchors table for a new run (or after one): everything the last run held goes. */
void lasync__reset_anchors(lua_State *L, lstate *S) {
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, S->anchors);
  S->nfree = 0;
  S->nextslot = 1;
}


/* Pushes extras[key] of the Task box at boxidx (nil when unset); returns its type. */
int lasync__get_extra(lua_State *L, int boxidx, const char *key) {
  if (lua_getiuservalue(L, boxidx, LASYNC_UV_EXTRA) != LUA_TTABLE) return LUA_TNIL;
  int t = lua_getfield(L, -1, key);
  lua_remove(L, -2);
  return t;
}

/* Pops the top value into extras[key] of the Task box at boxidx, making the table. */
void lasync__set_extra(lua_State *L, int boxidx, const char *key) {
  boxidx = lua_absindex(L, boxidx);
  if (lua_getiuservalue(L, boxidx, LASYNC_UV_EXTRA) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, boxidx, LASYNC_UV_EXTRA);
  }
  lua_insert(L, -2);
  lua_setfield(L, -2, key);
  lua_pop(L, 1);
}

void lasync__push_taskname(lua_State *L, ltask *tk, int boxidx) {
  if (boxidx && lasync__get_extra(L, boxidx, "name") == LUA_TSTRING) return;
  if (boxidx) lua_pop(L, 1);
  lua_pushfstring(L, "Task-%I", tk->id);
}

/* The running task, if L is its own coroutine; a clear error otherwise. A plain coroutine
 * inside a task cannot suspend the task: its yields belong to whoever resumed it. */
static ltask *running_task(lua_State *L, lstate *S, const char *fname) {
  ltask *cur = S->current;
  if (cur && cur->co == L) return cur;
  if (cur)
    luaL_error(L, "%s: called inside a plain coroutine (coroutine.wrap/create) within a task; "
                  "only the task's own coroutine can wait (call it outside the coroutine)", fname);
  else if (S->loop)
    luaL_error(L, "%s: called outside a task (in a callback?); spawn a task to wait", fname);
  else
    luaL_error(L, "%s: called outside a task (no loop is running: use lasync.run)", fname);
  return NULL;
}

/* ------------------------------------------------------------------------------- outcomes */

/* Pushes the values of a completed future (never raises for a DONE one). */
static int push_values(lua_State *L, lfut *fu, int idx) {
  if (fu->kind == K_TASK) {
    ltask *tk = (ltask *)fu;
    int n = fu->nres;
    luaL_checkstack(L, n, "too many results");
    lua_checkstack(tk->co, 1);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(tk->co, tk->resbase + i);
      lua_xmove(tk->co, L, 1);
    }
    return n;
  }
  const las_value_t *v;
  int n = fu->kind == K_CFUTURE ? las_future_values(fu->f, &v) : -1;
  if (n >= 0) {
    luaL_checkstack(L, n, "too many results");
    for (int i = 0; i < n; i++) {
      switch (v[i].type) {
      case LAS_VBOOL: lua_pushboolean(L, v[i].u.b); break;
      case LAS_VINT: lua_pushinteger(L, (lua_Integer)v[i].u.i); break;
      case LAS_VNUM: lua_pushnumber(L, v[i].u.n); break;
      case LAS_VSTR: lua_pushlstring(L, v[i].u.s.ptr, v[i].u.s.len); break;
      case LAS_VPTR: lua_pushlightuserdata(L, v[i].u.p); break;
      default: lua_pushnil(L); break;
      }
    }
    return n;
  }
  n = fu->nres;
  if (n == 0) return 0;
  if (n > 1 && fu->kind == K_FUTURE && n <= ((lluafut *)fu)->inl) {
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, n, "too many results");
    for (int i = 1; i <= n; i++) lua_getiuservalue(L, idx, LASYNC_UV_WAITERS + i);
    return n;
  }
  lua_getiuservalue(L, idx, LASYNC_UV_VALUES);
  if (n == 1) return 1;
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

/* Pushes the error of a failed future. */
void lasync__push_errval(lua_State *L, lfut *fu, int idx) {
  if (fu->kind == K_TASK) {
    ltask *tk = (ltask *)fu;
    lua_checkstack(tk->co, 1);
    lua_pushvalue(tk->co, 1);
    lua_xmove(tk->co, L, 1);
  } else if (fu->kind == K_CFUTURE) {
    const char *m = las_future_error_message(fu->f);
    lua_pushstring(L, m ? m : "error");
  } else {
    lua_getiuservalue(L, idx, LASYNC_UV_VALUES);
  }
}

/* Pushes a fresh CancelledError for awaiting the cancelled future at idx: it carries the
 * message given to cancel(), if any. */
static void push_cancelled(lua_State *L, lstate *S, lfut *fu, int idx) {
  const char *msg = NULL;
  if (fu->kind == K_TASK) {
    ltask *tk = (ltask *)fu;
    if (lua_type(tk->co, 1) == LUA_TTABLE) {
      lua_getfield(tk->co, 1, "message");
      lua_xmove(tk->co, L, 1);
    } else {
      lua_pushnil(L);
    }
  } else if (fu->kind == K_FUTURE) {
    lua_getiuservalue(L, idx, LASYNC_UV_VALUES);
  } else {
    lua_pushnil(L);
  }
  msg = lua_tostring(L, -1);
  push_cancel_error(L, S, msg ? msg : "cancelled");
  lua_remove(L, -2);
}

/* The pure-Lua layer's sources, embedded by cmake/embed.cmake. */
extern const struct lasync_embedded { const char *name, *chunkname, *src; size_t size; } lasync_embedded[];

/* Whether a chunk's source is one of the embedded lasync modules. */
static bool is_own_chunk(const char *source) {
  for (const struct lasync_embedded *e = lasync_embedded; e->name; e++)
    if (strcmp(source, e->chunkname) == 0) return true;
  return false;
}

/* Appends "awaited by <task> at <where>" to the traceback of a table error that crosses an
 * await, so that reports show the chain of tasks. The chain stays a chain: only an await of
 * the task at its end (where the error was raised, or the last task it crossed) extends it,
 * so siblings awaiting the same failed task, or one task retrieving it again, add nothing. */
/* Writes "file:line" of the innermost Lua frame of `of` from `level` on (C frames such as
 * await itself or pcall are skipped), or "?" when there is none. Returns whether one was.
 * Frames of lasync's own Lua layer (a Queue.get, a gather) are passed over for the user's
 * line that called it, which is what a report or a chain should name; only a stack made
 * of nothing else names them. */
bool lasync__where(lua_State *of, int level, char *buf, size_t n) {
  lua_Debug ar;
  bool found = false;
  for (; lua_getstack(of, level, &ar); level++) {
    if (lua_getinfo(of, "Sl", &ar) && ar.currentline > 0) {
      bool lib = is_own_chunk(ar.source);
      if (!found || !lib) snprintf(buf, n, "%s:%d", ar.short_src, ar.currentline);
      found = true;
      if (!lib) return true;
    }
  }
  if (!found) snprintf(buf, n, "?");
  return found;
}

/* The string-error version of the chain below: a string cannot carry a traceback, so the
 * traceback of the task that raised it (and its chain) is kept in a small table by value,
 * for lasync.traceback(err) and the runner. */
static void annotate_string(lua_State *L, lstate *S, int erridx, lfut *awaited) {
  ltask *cur = S->current;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->strtb);
  lua_pushvalue(L, erridx);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 2);
    return;
  }
  lua_getfield(L, -1, "last");
  bool at_end = lua_tointeger(L, -1) == ((ltask *)awaited)->id;
  lua_pop(L, 1);
  if (at_end) {
    char where[256];
    lasync__where(L, 1, where, sizeof where);
    lua_getfield(L, -1, "tb");
    lua_pushfstring(L, "%s\n  awaited by Task-%I at %s", lua_tostring(L, -1), cur->id, where);
    lua_setfield(L, -3, "tb");
    lua_pop(L, 1);
    lua_pushinteger(L, cur->id);
    lua_setfield(L, -2, "last");
  }
  lua_pop(L, 2);
}

static void annotate(lua_State *L, lstate *S, int erridx, lfut *awaited) {
  ltask *cur = S->current;
  if (!cur || awaited->kind != K_TASK) return;
  if (lua_type(L, erridx) == LUA_TSTRING) {
    annotate_string(L, S, erridx, awaited);
    return;
  }
  if (lua_type(L, erridx) != LUA_TTABLE) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->chains);
  lua_pushvalue(L, erridx);
  lua_rawget(L, -2);
  lua_Integer end = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (end != ((ltask *)awaited)->id) {
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, erridx);
  lua_pushinteger(L, cur->id);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  char where[256];
  lasync__where(L, 1, where, sizeof where);
  lua_pushliteral(L, "traceback");
  lua_rawget(L, erridx);
  const char *tb = lua_tostring(L, -1);
  lua_pushliteral(L, "traceback");
  lua_pushfstring(L, "%s\n  awaited by Task-%I at %s", tb ? tb : "", cur->id, where);
  lua_rawset(L, erridx);
  lua_pop(L, 1);
}

/* The outcome of a done future as the results of an await or result(): values, or the
 * error raised, or a CancelledError. */
int lasync__push_outcome(lua_State *L, lstate *S, lfut *fu, int idx) {
  switch (FSTATE(fu)) {
  case LAS_DONE:
    fu->flags |= F_RETRIEVED;
    return push_values(L, fu, idx);
  case LAS_FAILED:
    fu->flags |= F_RETRIEVED;
    lasync__push_errval(L, fu, idx);
    annotate(L, S, lua_gettop(L), fu);
    return lua_error(L);
  case LAS_CANCELLED:
    fu->flags |= F_RETRIEVED;
    if (S->current && S->current->co == L) S->current->base.flags |= F_CANCEL_SEEN;
    push_cancelled(L, S, fu, idx);
    return lua_error(L);
  default:
    lasync__push_error(L, S, S->cls_invalid, "the future is not done yet");
    return lua_error(L);
  }
}

/* Raises the CancelledError a cancelled task sees at its await, with the task's cancel
 * message. */
static int raise_cancel(lua_State *L, lstate *S, ltask *tk) {
  tk->base.flags |= F_CANCEL_SEEN;
  const char *msg = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_rawgeti(L, -1, tk->ref);
  lua_remove(L, -2);
  if (lasync__tofut(L, -1) && lasync__get_extra(L, lua_gettop(L), "msg") == LUA_TSTRING) {
    msg = lua_tostring(L, -1);
  }
  push_cancel_error(L, S, msg ? msg : "cancelled");
  return lua_error(L);
}

/* ---------------------------------------------------------------------------------- tasks */

/* Lets go of a task's C object: the box keeps the state, and the core frees the task once
 * the done callbacks already queued (which hold their own references) have run. */
void lasync__detach_task(ltask *tk) {
  if (!tk->base.f) return;
  tk->base.final = (unsigned char)las_future_state(tk->base.f);
  las_future_unref(tk->base.f);
  tk->base.f = NULL;
}

static void task_done(lstate *S, ltask *tk, las_state_t st) {
  if (S->debug) { /* for a slow-step report: once unanchored, the box may be collected */
    lua_State *L = S->runL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
    lua_rawgeti(L, -1, tk->ref);
    lasync__push_taskname(L, tk, lua_gettop(L));
    snprintf(S->donename, sizeof S->donename, "%s", lua_tostring(L, -1));
    lua_pop(L, 3);
    S->donetask = (las_task_t *)tk->base.f;
  }
  las_future_complete(tk->base.f, st);
  lasync__detach_task(tk);
  lasync__unanchor(S->runL, S, tk->ref);
  tk->ref = LUA_NOREF;
}

/* Completes a task whose error (or CancelledError) is at index 1 of its finished coroutine:
 * a real error is listed for the unretrieved-error report and its box gets the finalizer
 * metatable, so that collection reports it too. */
static void task_errored(lstate *S, ltask *tk) {
  lua_State *L = S->runL, *co = tk->co;
  bool cancelled = is_instance(co, 1, S->cls_cancelled);
  if (!cancelled) {
    tk->base.flags |= F_UNRETRIEVED;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
    lua_rawgeti(L, -1, tk->ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_task_gc);
    lua_setmetatable(L, -2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->unretrieved);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 3);
  }
  task_done(S, tk, cancelled ? LAS_CANCELLED : LAS_FAILED);
}

/* Stores a traceback for the failing task `tk` (in its box) and, for a table error without
 * one, in the error itself. `of` is the coroutine whose stack shows where it was raised. */
static void record_traceback(lua_State *L, lstate *S, ltask *tk, lua_State *of, int erridx,
                             int level, bool via_await) {
  erridx = lua_absindex(L, erridx);
  lasync__safe_tostring(L, erridx);
  lua_pushfstring(L, "Task-%I: %s", tk->id, lua_tostring(L, -1));
  luaL_traceback(L, of, lua_tostring(L, -1), level);
  lua_replace(L, -3);
  lua_pop(L, 1);
  if (lua_type(L, erridx) == LUA_TTABLE) {
    lua_pushliteral(L, "traceback");
    if (lua_rawget(L, erridx) == LUA_TNIL) {
      lua_pushliteral(L, "traceback");
      lua_pushvalue(L, -3);
      lua_rawset(L, erridx);
    }
    lua_pop(L, 1);
    /* The error's await chain starts at the first task it escapes from. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->chains);
    lua_pushvalue(L, erridx);
    if (lua_rawget(L, -2) == LUA_TNIL) {
      lua_pushvalue(L, erridx);
      lua_pushinteger(L, tk->id);
      lua_rawset(L, -4);
    }
    lua_pop(L, 2);
  } else if (lua_type(L, erridx) == LUA_TSTRING) {
    if (S->nstrtb >= 256) { /* bounded: old entries go */
      lua_newtable(L);
      lua_rawseti(L, LUA_REGISTRYINDEX, S->strtb);
      S->nstrtb = 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->strtb);
    lua_pushvalue(L, erridx);
    /* An await in this task raising what the awaited task raised: keep the origin. The same
     * text raised afresh (by error()) gets its own traceback, as strings are kept by value. */
    bool chained = false;
    if (via_await && lua_rawget(L, -2) == LUA_TTABLE) {
      lua_getfield(L, -1, "last");
      chained = lua_tointeger(L, -1) == tk->id;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!chained) {
      lua_pushvalue(L, erridx);
      lua_createtable(L, 0, 2);
      lua_pushvalue(L, -4);
      lua_setfield(L, -2, "tb");
      lua_pushinteger(L, tk->id);
      lua_setfield(L, -2, "last");
      lua_rawset(L, -3);
      S->nstrtb++;
    }
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_rawgeti(L, -1, tk->ref);
  if (lasync__tofut(L, -1)) {
    lua_pushvalue(L, -3);
    lasync__set_extra(L, -2, "tb");
  }
  lua_pop(L, 3);
}

static int l_await(lua_State *L);
static int f_await(lua_State *L);
static int f_result(lua_State *L);

/* Whether the error being handled was raised by an await (or result()) passing on the error
 * of what it awaited, rather than by error() or the like. */
static bool raised_by_await(lua_State *L) {
  lua_Debug ar;
  if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "f", &ar)) return false;
  lua_CFunction f = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  return f == l_await || f == f_await || f == f_result;
}

/* Message handler of a task's body: runs where the error was raised, inside the task, so the
 * traceback shows the task's own stack. The error value itself goes on unchanged. */
static int task_msgh(lua_State *L) {
  lstate *S = lasync__state(L); /* a light function: no closure to allocate per task */
  if (S->current && !is_instance(L, 1, S->cls_cancelled))
    record_traceback(L, S, S->current, L, 1, 1, raised_by_await(L));
  lua_settop(L, 1);
  return 1;
}

/* The body of every task coroutine: the user's function under a yieldable pcall. An error
 * then unwinds inside the coroutine, so the function's <close> variables and pcall handlers
 * run in the task and may themselves await (Lua 5.4 closes them in finishpcallk). Returns
 * true and the results, or false and the error. */
static int task_body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_replace(L, 1);
    return lua_gettop(L);
  }
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

static int task_body(lua_State *L) {
  int nargs = lua_gettop(L) - 1;
  lua_pushcfunction(L, task_msgh);
  lua_insert(L, 1);
  return task_body_k(L, lua_pcallk(L, nargs, LUA_MULTRET, 1, 0, task_body_k), 0);
}

/* An error that escaped the body's pcall (an error in the message handler itself, or a
 * misuse the step detected): record where, close the coroutine (running what <close>
 * variables are left; a failure there replaces the error), and fail the task. */
static void task_crashed(lstate *S, ltask *tk) {
  lua_State *L = S->runL, *co = tk->co;
  lua_xmove(co, L, 1);
  int err = lua_gettop(L);
  if (!is_instance(L, err, S->cls_cancelled)) record_traceback(L, S, tk, co, err, 0, false);
  if (lasync__closethread(co, L) != LUA_OK) {
    lua_xmove(co, L, 1);
    lua_replace(L, err);
  }
  lua_settop(co, 0);
  lua_xmove(L, co, 1);
  task_errored(S, tk);
}

/* Reports (debug mode) a task that was handed a CancelledError, did not uncancel, and still
 * returned normally: it swallowed the cancellation. */
static void check_swallowed(lstate *S, ltask *tk) {
  if (!S->debug || !(tk->base.flags & F_CANCEL_SEEN) || las_task_cancelling((las_task_t *)tk->base.f) == 0)
    return;
  lua_State *L = S->runL;
  lua_pushfstring(L, "Task-%I caught CancelledError and went on (it returned normally after being "
                     "cancelled; re-raise the error, or call task:uncancel() if that is deliberate)",
                  tk->id);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors); /* ctx.task: it is still anchored here */
  lua_rawgeti(L, -1, tk->ref);
  lasync__report(L, S, lua_tostring(L, -3), 0, lasync__tofut(L, -1) ? -1 : 0, NULL);
  lua_pop(L, 3);
}

/* A bare coroutine.yield() has no continuation to raise a cancellation from, so a one-shot
 * count hook does it: set just before the task resumes, it fires at the first instruction
 * after the yield, puts back whatever hook the coroutine had, and raises CancelledError
 * there, which makes a bare yield a cancellation point as it is in asyncio. */
static void cancel_at_yield_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lstate *S = lasync__state(L);
  ltask *tk = S ? S->current : NULL;
  if (!tk || tk->co != L) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  lua_sethook(L, tk->hook.fn, tk->hook.mask, tk->hook.count);
  raise_cancel(L, S, tk);
}

static void arm_cancel_at_yield(ltask *tk) {
  tk->hook.fn = lua_gethook(tk->co);
  tk->hook.mask = lua_gethookmask(tk->co);
  tk->hook.count = lua_gethookcount(tk->co);
  lua_sethook(tk->co, cancel_at_yield_hook, LUA_MASKCOUNT, 1);
}

/* Debug mode: remembers where the step about to run begins, for the report of a slow step
 * that finishes the task (its stack is gone by then): a first step begins at the function,
 * a later one where the task was suspended. */
static void note_step_start(lstate *S, las_task_t *t, ltask *tk, int nargs) {
  S->steptask = t;
  lua_Debug ar;
  if (nargs == 0) {
    lasync__where(tk->co, 0, S->stepfrom, sizeof S->stepfrom);
  } else if (lua_type(tk->co, 2) == LUA_TFUNCTION && lua_checkstack(tk->co, 1)) {
    lua_pushvalue(tk->co, 2); /* the coroutine's stack: task_body, the function, its args */
    lua_getinfo(tk->co, ">S", &ar);
    snprintf(S->stepfrom, sizeof S->stepfrom, "%s:%d", ar.short_src, ar.linedefined);
  } else {
    snprintf(S->stepfrom, sizeof S->stepfrom, "?");
  }
}

/* The core's step callback: resume the coroutine once, then read what it did. A yield that
 * went through lasync left the task suspended on something; a bare yield gives up one
 * iteration; a yield with values is a misuse, reported as the task's error. */
static void task_step(las_task_t *t, void *ud) {
  ltask *tk = ud;
  lstate *S = tk->base.S;
  lua_State *co = tk->co;
  int nargs = 0, nres = 0;
  if (!(tk->base.flags & F_STARTED)) {
    tk->base.flags |= F_STARTED;
    if (las_task_take_cancel(t)) {
      /* Cancelled before its first step: the function never runs. */
      lua_settop(co, 0);
      lua_rawgeti(co, LUA_REGISTRYINDEX, S->anchors);
      lua_rawgeti(co, -1, tk->ref);
      int has_msg = lasync__get_extra(co, lua_gettop(co), "msg") == LUA_TSTRING;
      const char *msg = has_msg ? lua_tostring(co, -1) : "cancelled before it started";
      push_cancel_error(co, S, msg);
      lua_replace(co, 1);
      lua_settop(co, 1);
      task_errored(S, tk);
      return;
    }
    nargs = lua_gettop(co) - 1;
  }
  if (S->debug) note_step_start(S, t, tk, nargs);
  if ((tk->base.flags & F_BARE_YIELD) && las_task_take_cancel(t)) arm_cancel_at_yield(tk);
  tk->base.flags &= (unsigned char)~F_BARE_YIELD;
  ltask *prev = S->current;
  S->current = tk;
  int st = lua_resume(co, S->runL, nargs, &nres);
  S->current = prev;
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    if (las_task_suspended(t)) return;
    if (nres == 0) {
      tk->base.flags |= F_BARE_YIELD;
      las_task_schedule(t);
      return;
    }
    lua_pushfstring(co, "Task-%I yielded %d value(s) to the loop: inside a task, use lasync.await/"
                        "sleep to wait and coroutine.wrap for generators", tk->id, nres);
    lasync__push_error(co, S, S->cls_invalid, lua_tostring(co, -1));
    lua_remove(co, -2);
    task_crashed(S, tk);
    return;
  }
  if (st != LUA_OK) {
    task_crashed(S, tk);
    return;
  }
  int top = lua_gettop(co);
  if (lua_toboolean(co, top - nres + 1)) {
    tk->base.nres = nres - 1;
    tk->resbase = top - nres + 1;
    check_swallowed(S, tk);
    task_done(S, tk, LAS_DONE);
    return;
  }
  lua_insert(co, 1);
  lua_settop(co, 1);
  task_errored(S, tk);
}

/* Creates a task running the callable at `fidx` with the `nargs` values after it, anchored
 * until it finishes, and schedules its first step. Leaves the Task on the stack. */
static ltask *spawn_at(lua_State *L, lstate *S, int fidx, int nargs) {
  ltask *tk = (ltask *)new_box(L, S, sizeof(ltask), 2, K_TASK, S->mt_task);
  tk->ref = LUA_NOREF;
  lua_State *co = lua_newthread(L);
  tk->co = co;
  lua_setiuservalue(L, -2, LASYNC_UV_THREAD);
  lua_checkstack(co, nargs + 2);
  lua_pushcfunction(L, task_body);
  for (int i = 0; i <= nargs; i++) lua_pushvalue(L, fidx + i);
  lua_xmove(L, co, nargs + 2);
  las_task_t *t = las_task_new(S->loop, task_step, tk);
  if (!t) luaL_error(L, "lasync.spawn: out of memory");
  tk->base.f = las_task_future(t);
  tk->id = atomic_fetch_add(&task_counter, 1) + 1;
  tk->ref = lasync__anchor(L, S, -1);
  if (las_task_schedule(t)) luaL_error(L, "lasync.spawn: out of memory");
  return tk;
}

void lasync__check_callable(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_error(L, "%s: expected a function, got %s", fname, luaL_typename(L, idx));
}

static int l_spawn(lua_State *L) {
  lstate *S = getS(L);
  lasync__check_callable(L, 1, "lasync.spawn");
  if (!S->loop) return luaL_error(L, "lasync.spawn: no loop is running (call it inside lasync.run)");
  spawn_at(L, S, 1, lua_gettop(L) - 1);
  return 1;
}

/* Exposed for lasync.run: spawn the main task. */
ltask *lasync__spawn_main(lua_State *L, lstate *S, int fidx, int nargs) {
  return spawn_at(L, S, fidx, nargs);
}

static int l_current_task(lua_State *L) {
  lstate *S = getS(L);
  if (!S->current) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_rawgeti(L, -1, S->current->ref);
  return 1;
}

/* ----------------------------------------------------------------------- Lua futures */

/* A future created from Lua lives entirely in its box: state, values, and its waiters (in
 * registration order: Tasks suspended on it and done callbacks). No C object, no
 * allocation outside Lua, no finalizer unless it fails. */
static void lfuture_add_waiter(lua_State *L, int futidx, int validx) {
  int t = lua_getiuservalue(L, futidx, LASYNC_UV_WAITERS);
  if (t == LUA_TNIL && lua_type(L, validx) == LUA_TLIGHTUSERDATA) {
    lua_pop(L, 1);
    lua_pushvalue(L, validx);
    lua_setiuservalue(L, futidx, LASYNC_UV_WAITERS);
    return;
  }
  if (t != LUA_TTABLE) {
    lua_createtable(L, 4, 0);
    if (t != LUA_TNIL) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 1);
    }
    lua_remove(L, -2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, futidx, LASYNC_UV_WAITERS);
  }
  lua_pushvalue(L, validx);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

static void lua_done_detached_cb(void *a, void *b);

/* Schedules one waiter (popped from the top): a Task (kept as a light userdata pointing to
 * its box, valid because a task waiting here is pending and so anchored) is woken through the
 * ready queue; a callable is called with the future through call_soon. */
static void lfuture_notify(lua_State *L, lstate *S, int futidx) {
  if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
    ltask *w = lua_touserdata(L, -1);
    if (w->base.f) las_task_wake((las_task_t *)w->base.f);
    lua_pop(L, 1);
    return;
  }
  lua_createtable(L, 2, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, futidx);
  lua_rawseti(L, -2, 2);
  int ref = lasync__anchor(L, S, -1);
  lua_pop(L, 1);
  if (las_call_soon(S->loop, lua_done_detached_cb, (void *)(intptr_t)ref, S))
    lasync__unanchor(L, S, ref);
}

/* Completes a Lua future (values or error already stored) and schedules its waiters. */
static void lfuture_settle(lua_State *L, lstate *S, lfut *fu, int futidx, las_state_t st) {
  fu->final = (unsigned char)st;
  lluafut *lf = (lluafut *)fu;
  if (lf->hook) {
    lasync_futhook hook = lf->hook;
    lf->hook = NULL;
    hook(L, futidx, (int)st, lf->hookud);
  }
  int t = lua_getiuservalue(L, futidx, LASYNC_UV_WAITERS);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_setiuservalue(L, futidx, LASYNC_UV_WAITERS);
  if (t != LUA_TTABLE) {
    lfuture_notify(L, S, futidx);
    return;
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lfuture_notify(L, S, futidx);
  }
  lua_pop(L, 1);
}

/* Cancels a pending Lua future with the message at msgidx (0: none). */
static void lfuture_cancel(lua_State *L, lstate *S, lfut *fu, int futidx, int msgidx) {
  if (msgidx) {
    lua_pushvalue(L, msgidx);
    lua_setiuservalue(L, futidx, LASYNC_UV_VALUES);
  }
  lfuture_settle(L, S, fu, futidx, LAS_CANCELLED);
}

static void check_lua_future_loop(lua_State *L, lstate *S, lfut *fu, const char *fname) {
  if (fu->kind == K_FUTURE && (fu->run != S->run || !S->loop))
    luaL_error(L, "%s: the future's loop is closed (it belongs to an earlier lasync.run)", fname);
}

/* The core's cancel hook: a task suspended on a Lua future is being cancelled. As asyncio
 * cancels the future a task waits for, cancel that future (with the task's cancel message),
 * which wakes the task with the cancellation. */
int lasync__cancel_hook(las_task_t *t, void *data) {
  lstate *S = data;
  if (!lasync__is_lua_task(t)) return 0; /* a host's own C task on this loop */
  ltask *tk = las_task_data(t);
  lua_State *L = S->runL, *co = tk->co;
  if (!L || lua_gettop(co) < 1) return 0;
  lua_checkstack(co, 1);
  lua_pushvalue(co, 1);
  lua_xmove(co, L, 1);
  int futidx = lua_gettop(L);
  lfut *fu = lasync__tofut(L, futidx);
  if (!fu || fu->kind != K_FUTURE || fu->final != LAS_PENDING) {
    lua_pop(L, 1);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  lua_rawgeti(L, -1, tk->ref);
  int msg = lasync__tofut(L, -1) && lasync__get_extra(L, lua_gettop(L), "msg") == LUA_TSTRING
                ? lua_gettop(L) : 0;
  lfuture_cancel(L, S, fu, futidx, msg);
  lua_settop(L, futidx - 1);
  return 1;
}

/* ---------------------------------------------------------------------------------- await */

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lstate *S = getS(L);
  lfut *fu = lasync__tofut(L, 1);
  /* Woken while what it awaits is still pending: a cancellation that had to break a cycle
   * of tasks awaiting each other. */
  if (FSTATE(fu) == LAS_PENDING && S->current && las_task_take_cancel((las_task_t *)S->current->base.f))
    return raise_cancel(L, S, S->current);
  return lasync__push_outcome(L, S, fu, 1);
}

static int ret_all_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

/* A task that cannot yield right now (inside a C function that called back into Lua, such
 * as table.sort's comparator or a metamethod called from C) must not register anything. */
static void check_yieldable(lua_State *L, const char *fname) {
  if (!lua_isyieldable(L))
    luaL_error(L, "%s: cannot yield here: the task is inside a C call that cannot be "
                  "suspended (a table.sort comparator, a __gc, a C library callback?)", fname);
}

static int l_await(lua_State *L) {
  lstate *S = getS(L);
  ltask *cur = running_task(L, S, "lasync.await");
  lfut *fu = lasync__tofut(L, 1);
  if (!fu) {
    if (lua_isnoneornil(L, 1) || luaL_getmetafield(L, 1, "__await") == LUA_TNIL)
      return luaL_error(L, "lasync.await: expected a Future, a Task or a value with __await, got %s",
                        luaL_typename(L, 1));
    /* __await(obj) runs in this task and may itself wait; its results are the await's. */
    lua_pushvalue(L, 1);
    int base = lua_gettop(L) - 2;
    lua_callk(L, 1, LUA_MULTRET, base, ret_all_k);
    return ret_all_k(L, LUA_OK, base);
  }
  if (FSTATE(fu) != LAS_PENDING) return lasync__push_outcome(L, S, fu, 1);
  check_yieldable(L, "lasync.await");
  las_task_t *t = (las_task_t *)cur->base.f;
  if (fu->kind == K_TASK && !fu->f)
    return luaL_error(L, "lasync.await: the task belongs to an earlier lasync.run (it was still "
                         "pending when that run ended)");
  if (fu->kind == K_FUTURE) {
    check_lua_future_loop(L, S, fu, "lasync.await");
    lua_settop(L, 1);
    lua_pushlightuserdata(L, cur);
    lfuture_add_waiter(L, 1, 2);
    lua_settop(L, 1);
    las_task_wait_external(t);
    if (las_task_take_cancel(t)) {
      /* A cancellation was waiting for this suspension: it cancels what we now wait for. */
      lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
      lua_rawgeti(L, -1, cur->ref);
      int msg = lasync__get_extra(L, lua_gettop(L), "msg") == LUA_TSTRING ? lua_gettop(L) : 0;
      lfuture_cancel(L, S, fu, 1, msg);
      lua_settop(L, 1);
    }
    return lua_yieldk(L, 0, 0, await_k);
  }
  if (fu->f == cur->base.f) return luaL_error(L, "lasync.await: a task cannot await itself");
  if (las_future_loop(fu->f) != S->loop)
    return luaL_error(L, "lasync.await: the future belongs to another loop (one from an earlier lasync.run?)");
  int rc = las_task_wait(t, fu->f);
  if (rc) return luaL_error(L, "lasync.await: %s", las_strerror(rc));
  lua_settop(L, 1);
  return lua_yieldk(L, 0, 0, await_k);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lstate *S = getS(L);
  ltask *cur = S->current;
  if (las_task_take_cancel((las_task_t *)cur->base.f)) return raise_cancel(L, S, cur);
  return lua_gettop(L) - 1;
}

static int l_sleep(lua_State *L) {
  lstate *S = getS(L);
  ltask *cur = running_task(L, S, "lasync.sleep");
  lua_Number d = luaL_checknumber(L, 1);
  if (d != d) return luaL_error(L, "lasync.sleep: the delay is NaN");
  check_yieldable(L, "lasync.sleep");
  las_task_t *t = (las_task_t *)cur->base.f;
  int rc = d <= 0 ? las_task_schedule(t) : las_task_sleep_until(t, las_loop_time(S->loop) + d);
  if (rc) return luaL_error(L, "lasync.sleep: %s", las_strerror(rc));
  return lua_yieldk(L, 0, 0, sleep_k);
}

/* -------------------------------------------------------------------------------- futures */

static int l_future(lua_State *L) {
  lstate *S = getS(L);
  if (!S->loop) return luaL_error(L, "lasync.future: no loop is running (call it inside lasync.run)");
  lfut *fu = new_box(L, S, sizeof(lluafut), 2, K_FUTURE, S->mt_future);
  fu->run = S->run;
  return 1;
}

/* Stores the n values on top of the stack (popping them) as a Lua future's result. */
static void lfuture_store(lua_State *L, lfut *fu, int futidx, int n) {
  if (n == 1) {
    lua_setiuservalue(L, futidx, LASYNC_UV_VALUES);
  } else if (n <= ((lluafut *)fu)->inl) {
    for (int i = n; i >= 1; i--) lua_setiuservalue(L, futidx, LASYNC_UV_WAITERS + i);
  } else if (n > 1) {
    lua_createtable(L, n, 0);
    lua_insert(L, -n - 1);
    for (int i = n; i >= 1; i--) lua_rawseti(L, -i - 1, i);
    lua_setiuservalue(L, futidx, LASYNC_UV_VALUES);
  }
  fu->nres = n;
}

static void check_settable(lua_State *L, lstate *S, lfut *fu, const char *fname) {
  if (fu->kind == K_TASK)
    luaL_error(L, "%s: a task's outcome comes from its function; it cannot be set", fname);
  if (FSTATE(fu) != LAS_PENDING) {
    lua_pushfstring(L, "%s: the future is already done (its outcome was set twice?)", fname);
    lasync__push_error(L, S, S->cls_invalid, lua_tostring(L, -1));
    lua_error(L);
  }
}

/* Converts the Lua values from idx on into C values for a future a host created. */
static int set_cvalues(lua_State *L, lfut *fu, int first) {
  int n = lua_gettop(L) - first + 1;
  las_value_t vals[16];
  if (n > 16) return luaL_error(L, "Future.set_result: a C future takes at most 16 values");
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    memset(&vals[i], 0, sizeof vals[i]);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: vals[i].type = LAS_VNIL; break;
    case LUA_TBOOLEAN: vals[i].type = LAS_VBOOL; vals[i].u.b = lua_toboolean(L, idx); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) { vals[i].type = LAS_VINT; vals[i].u.i = lua_tointeger(L, idx); }
      else { vals[i].type = LAS_VNUM; vals[i].u.n = lua_tonumber(L, idx); }
      break;
    case LUA_TSTRING:
      vals[i].type = LAS_VSTR;
      vals[i].u.s.ptr = lua_tolstring(L, idx, &vals[i].u.s.len);
      break;
    case LUA_TLIGHTUSERDATA: vals[i].type = LAS_VPTR; vals[i].u.p = lua_touserdata(L, idx); break;
    default:
      return luaL_error(L, "Future.set_result: a C future takes nil, booleans, numbers, strings "
                           "and light userdata, not %s", luaL_typename(L, idx));
    }
  }
  int rc = las_future_set_values(fu->f, vals, n);
  if (rc) return luaL_error(L, "Future.set_result: %s", las_strerror(rc));
  return 0;
}

static int f_set_result(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.set_result");
  check_settable(L, S, fu, "Future.set_result");
  if (fu->kind == K_CFUTURE) return set_cvalues(L, fu, 2);
  check_lua_future_loop(L, S, fu, "Future.set_result");
  lfuture_store(L, fu, 1, lua_gettop(L) - 1);
  lfuture_settle(L, S, fu, 1, LAS_DONE);
  return 0;
}

static int f_set_error(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.set_error");
  check_settable(L, S, fu, "Future.set_error");
  if (lua_isnoneornil(L, 2)) return luaL_error(L, "Future.set_error: the error must not be nil");
  if (fu->kind == K_CFUTURE) {
    lasync__safe_tostring(L, 2);
    las_future_set_error(fu->f, lua_tostring(L, -1));
    return 0;
  }
  check_lua_future_loop(L, S, fu, "Future.set_error");
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LASYNC_UV_VALUES);
  fu->flags |= F_UNRETRIEVED;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_future_gc); /* report it if nobody retrieves it */
  lua_setmetatable(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->unretrieved);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_settop(L, 1);
  lfuture_settle(L, S, fu, 1, LAS_FAILED);
  return 0;
}

static int f_cancel(lua_State *L) {
  lfut *fu = checkfut(L, 1, "Future.cancel");
  if (FSTATE(fu) != LAS_PENDING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (!lua_isnoneornil(L, 2)) luaL_checkstring(L, 2);
  lua_settop(L, 2);
  if (lua_isnil(L, 2) && fu->kind == K_TASK) {
    /* As in asyncio, every cancel() sets the message: a plain one drops an earlier one's. */
    if (lua_getiuservalue(L, 1, LASYNC_UV_EXTRA) == LUA_TTABLE) {
      lua_pushnil(L);
      lua_setfield(L, -2, "msg");
    }
    lua_settop(L, 2);
  }
  if (fu->kind == K_FUTURE) {
    lstate *S = getS(L);
    check_lua_future_loop(L, S, fu, "Future.cancel");
    lfuture_cancel(L, S, fu, 1, lua_isnil(L, 2) ? 0 : 2);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!lua_isnil(L, 2)) {
    if (fu->kind == K_TASK) {
      lstate *S = getS(L);
      lua_pushvalue(L, 2);
      lasync__set_extra(L, 1, "msg");
      /* Cancelling a task cancels the task it awaits (and so on down): the message goes
       * with it, as asyncio passes it to fut_waiter.cancel(msg). */
      las_future_t *w = fu->f ? las_task_waited((las_task_t *)fu->f) : NULL;
      for (int depth = 0; w && las_future_is_task(w) && depth < 10000; depth++) {
        if (!lasync__is_lua_task(las_task_from_future(w))) break;
        ltask *child = las_task_data(las_task_from_future(w));
        if (child->ref == LUA_NOREF) break;
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
        lua_rawgeti(L, -1, child->ref);
        if (lasync__get_extra(L, lua_gettop(L), "msg") == LUA_TNIL) {
          lua_pop(L, 1);
          lua_pushvalue(L, 2);
          lasync__set_extra(L, -2, "msg");
        } else {
          lua_pop(L, 1);
        }
        lua_pop(L, 2);
        w = las_task_waited((las_task_t *)child->base.f);
      }
    } else {
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, 1, LASYNC_UV_VALUES);
    }
  }
  lua_pushboolean(L, las_future_cancel(fu->f));
  return 1;
}

static int f_done(lua_State *L) {
  lfut *fu = checkfut(L, 1, "Future.done");
  lua_pushboolean(L, FSTATE(fu) != LAS_PENDING);
  return 1;
}

static int f_cancelled(lua_State *L) {
  lfut *fu = checkfut(L, 1, "Future.cancelled");
  lua_pushboolean(L, FSTATE(fu) == LAS_CANCELLED);
  return 1;
}

static int f_result(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.result");
  if (FSTATE(fu) == LAS_PENDING) {
    lasync__push_error(L, S, S->cls_invalid, "Future.result: the result is not set yet");
    return lua_error(L);
  }
  lua_settop(L, 1);
  return lasync__push_outcome(L, S, fu, 1);
}

static int f_error(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.error");
  switch (FSTATE(fu)) {
  case LAS_PENDING:
    lasync__push_error(L, S, S->cls_invalid, "Future.error: the future is not done yet");
    return lua_error(L);
  case LAS_FAILED:
    fu->flags |= F_RETRIEVED;
    lasync__push_errval(L, fu, 1);
    return 1;
  case LAS_CANCELLED:
    fu->flags |= F_RETRIEVED;
    push_cancelled(L, S, fu, 1);
    return lua_error(L);
  default:
    return 0;
  }
}

/* Lua done callbacks: each registration anchors {fn, future} and passes the anchor's slot as
 * the core callback's word, so removal can find it by function. Runs fn(future) and reports
 * an error through the exception handler. */
static void run_done_callback(lstate *S, int ref) {
  lua_State *L = S->runL;
  lasync__take_anchored(L, S, ref);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  lua_remove(L, -3);
  int base = lua_gettop(L) - 1;
  lasync__note_callback(L, S, base);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->tbfunc);
  lua_insert(L, base);
  if (lua_pcall(L, 1, 0, base) != LUA_OK) {
    int err = lua_gettop(L);
    lasync__report(L, S, "Exception in a done callback", err, 0, lasync__push_cbtb(L));
    lua_settop(L, err - 1);
  }
  lua_pop(L, 1);
}

static void lua_done_cb(void *a, void *b) {
  run_done_callback(las_loop_get_data(las_future_loop(b)), (int)(intptr_t)a);
}

/* The same through call_soon, for a future with no C object (a Lua future, a finished task). */
static void lua_done_detached_cb(void *a, void *b) { run_done_callback(b, (int)(intptr_t)a); }

bool lasync__is_done_callback(las_cb fn) { return fn == lua_done_cb || fn == lua_done_detached_cb; }

static int f_add_done_callback(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.add_done_callback");
  lasync__check_callable(L, 2, "Future.add_done_callback");
  if (!S->loop || (fu->f && las_future_loop(fu->f) != S->loop))
    return luaL_error(L, "Future.add_done_callback: the future's loop is not running");
  if (fu->kind == K_TASK && !fu->f && FSTATE(fu) == LAS_PENDING)
    return luaL_error(L, "Future.add_done_callback: the task belongs to an earlier lasync.run");
  if (fu->kind == K_FUTURE && FSTATE(fu) == LAS_PENDING) {
    check_lua_future_loop(L, S, fu, "Future.add_done_callback");
    lfuture_add_waiter(L, 1, 2);
    return 0;
  }
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 2);
  int ref = lasync__anchor(L, S, -1);
  int rc = fu->f ? las_future_add_callback(fu->f, lua_done_cb, (void *)(intptr_t)ref)
                 : las_call_soon(S->loop, lua_done_detached_cb, (void *)(intptr_t)ref, S);
  if (rc) {
    lasync__unanchor(L, S, ref);
    return luaL_error(L, "Future.add_done_callback: %s", las_strerror(rc));
  }
  return 0;
}

static int f_remove_done_callback(lua_State *L) {
  lstate *S = getS(L);
  lfut *fu = checkfut(L, 1, "Future.remove_done_callback");
  int removed = 0;
  if (fu->kind == K_FUTURE) {
    if (lua_getiuservalue(L, 1, LASYNC_UV_WAITERS) == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1), j = 0;
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_rawequal(L, -1, 2)) {
          removed++;
          lua_pop(L, 1);
        } else {
          lua_rawseti(L, -2, ++j);
        }
      }
      for (lua_Integer i = j + 1; i <= n; i++) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
      }
    }
    lua_pushinteger(L, removed);
    return 1;
  }
  /* Registrations are slots of the current run's anchors: a future of an earlier run (or of
   * another loop) has none of this run's. */
  if (!fu->f || las_future_loop(fu->f) != S->loop) {
    lua_pushinteger(L, 0);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->anchors);
  for (int i = las_future_callback_count(fu->f) - 1; i >= 0; i--) {
    las_cb cb;
    void *a;
    las_future_callback_at(fu->f, i, &cb, &a);
    if (cb != lua_done_cb) continue;
    int ref = (int)(intptr_t)a;
    lua_rawgeti(L, -1, ref);
    lua_rawgeti(L, -1, 1);
    bool same = lua_rawequal(L, -1, 2);
    lua_pop(L, 2);
    if (same) {
      las_future_remove_callback(fu->f, cb, a);
      lasync__unanchor(L, S, ref);
      removed++;
    }
  }
  lua_pushinteger(L, removed);
  return 1;
}

static int f_tostring(lua_State *L) {
  lfut *fu = checkfut(L, 1, "tostring");
  static const char *names[] = {"pending", "done", "failed", "cancelled"};
  const char *st = names[FSTATE(fu)];
  if (fu->kind == K_TASK) {
    lasync__push_taskname(L, (ltask *)fu, 1);
    lua_pushfstring(L, "Task<%s %s>", lua_tostring(L, -1), st);
  } else {
    lua_pushfstring(L, "Future<%s>", st);
  }
  return 1;
}

/* Collection: report an error nobody retrieved (once), and in debug mode a task destroyed
 * while still pending; then drop the box's reference on the C object. */
static int f_gc(lua_State *L) {
  lfut *fu = lasync__tofut(L, 1);
  if (!fu || (fu->flags & F_COLLECTED)) return 0;
  fu->flags |= F_COLLECTED;
  lstate *S = fu->S;
  if (FSTATE(fu) == LAS_FAILED && !(fu->flags & (F_RETRIEVED | F_REPORTED))) {
    fu->flags |= F_REPORTED;
    lasync__push_errval(L, fu, 1);
    lasync__report(L, S, fu->kind == K_TASK ? "Task exception was never retrieved"
                                             : "Future exception was never retrieved",
                   lua_gettop(L), 1, NULL);
    lua_pop(L, 1);
  } else if (fu->kind == K_TASK && FSTATE(fu) == LAS_PENDING && S->debug) {
    ltask *tk = (ltask *)fu;
    lua_pushfstring(L, "Task-%I was destroyed but it is pending", tk->id);
    lasync__report(L, S, lua_tostring(L, -1), 0, 0, NULL);
    lua_pop(L, 1);
  }
  if (fu->f) {
    fu->final = (unsigned char)las_future_state(fu->f);
    las_future_unref(fu->f);
    fu->f = NULL;
  }
  return 0;
}

static int f_await(lua_State *L) {
  checkfut(L, 1, "Future.await");
  lua_settop(L, 1);
  return l_await(L);
}

/* ---------------------------------------------------------------------------- task methods */

static int t_get_name(lua_State *L) {
  ltask *tk = checktask(L, 1, "Task.get_name");
  lasync__push_taskname(L, tk, 1);
  return 1;
}

static int t_set_name(lua_State *L) {
  checktask(L, 1, "Task.set_name");
  if (lua_isnone(L, 2)) return luaL_error(L, "Task.set_name: a name is expected");
  luaL_tolstring(L, 2, NULL);
  lasync__set_extra(L, 1, "name");
  return 0;
}

static int t_cancelling(lua_State *L) {
  ltask *tk = checktask(L, 1, "Task.cancelling");
  lua_pushinteger(L, tk->base.f ? las_task_cancelling((las_task_t *)tk->base.f) : 0);
  return 1;
}

static int t_uncancel(lua_State *L) {
  ltask *tk = checktask(L, 1, "Task.uncancel");
  lua_pushinteger(L, tk->base.f ? las_task_uncancel((las_task_t *)tk->base.f) : 0);
  return 1;
}

/* ----------------------------------------------------------------------------- embedding */

static char STATE_KEY;

lstate *lasync__state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  lstate *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S;
}

las_loop_t *lasync_getloop(lua_State *L) {
  lstate *S = lasync__state(L);
  return S ? S->loop : NULL;
}

lua_State *lasync_loopstate(las_loop_t *loop) {
  /* Only lasync's loops carry its state: they are the ones with its cancel hook. */
  if (!loop || las_loop_get_cancel_hook(loop) != lasync__cancel_hook) return NULL;
  lstate *S = las_loop_get_data(loop);
  return S ? S->runL : NULL;
}

las_future_t *lasync_tofuture(lua_State *L, int idx) {
  lfut *fu = lasync__tofut(L, idx);
  return fu ? fu->f : NULL;
}

void lasync_pushfuture(lua_State *L, las_future_t *f) {
  lstate *S = lasync__state(L);
  if (!S) luaL_error(L, "lasync_pushfuture: lasync is not open in this state");
  if (!f) luaL_error(L, "lasync_pushfuture: NULL future");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->cfuts);
  if (lua_rawgetp(L, -1, f) == LUA_TUSERDATA) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lfut *fu;
  if (las_future_is_task(f)) {
    lua_pop(L, 1);
    luaL_error(L, "lasync_pushfuture: C tasks cannot be pushed");
  }
  fu = new_box(L, S, sizeof(lfut), 1, K_CFUTURE, S->mt_future_gc);
  las_future_ref(f);
  fu->f = f;
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, f);
  lua_remove(L, -2);
}

void lasync_report_error(lua_State *L, int idx, const char *what) {
  lstate *S = lasync__state(L);
  idx = lua_absindex(L, idx);
  lua_pushfstring(L, "Exception in %s", what ? what : "a C callback");
  lasync__report(L, S, lua_tostring(L, -1), idx, 0, NULL);
  lua_pop(L, 1);
}

/* ----------------------------------------------------------------------------- the module */

static char CBTB_KEY;

/* Message handler for callbacks whose errors are only reported: the error stays the value
 * raised (the report's ctx.error); a table with a traceback field keeps its own, and for
 * anything else the traceback is set aside for the report (lasync__push_cbtb). */
static int tb_handler(lua_State *L) {
  bool own = false;
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_pushliteral(L, "traceback");
    own = lua_rawget(L, 1) == LUA_TSTRING;
    lua_pop(L, 1);
  }
  if (!own) {
    luaL_traceback(L, L, NULL, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CBTB_KEY);
  }
  lua_settop(L, 1);
  return 1;
}

/* Pushes (and forgets) the traceback tb_handler set aside, or nil; returns it as a string. */
const char *lasync__push_cbtb(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CBTB_KEY);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CBTB_KEY);
  return lua_tostring(L, -1);
}

static int state_gc(lua_State *L) {
  lstate *S = lua_touserdata(L, 1);
  free(S->freeslots);
  S->freeslots = NULL;
  S->nfree = S->capfree = 0;
  if (S->loop) {
    las_loop_destroy(S->loop);
    S->loop = NULL;
  }
  return 0;
}

static const luaL_Reg future_methods[] = {
  {"set_result", f_set_result}, {"set_error", f_set_error}, {"cancel", f_cancel},
  {"done", f_done}, {"cancelled", f_cancelled}, {"result", f_result}, {"error", f_error},
  {"add_done_callback", f_add_done_callback}, {"remove_done_callback", f_remove_done_callback},
  {"await", f_await}, {NULL, NULL}};

static const luaL_Reg task_methods[] = {
  {"get_name", t_get_name}, {"set_name", t_set_name}, {"cancelling", t_cancelling},
  {"uncancel", t_uncancel}, {NULL, NULL}};

static int make_mt(lua_State *L, lstate *S, const char *name, const luaL_Reg *m1,
                   const luaL_Reg *m2, bool gc) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_createtable(L, 0, 16);
  lua_pushlightuserdata(L, S);
  luaL_setfuncs(L, m1, 1);
  if (m2) {
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, m2, 1);
  }
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, f_tostring);
  lua_setfield(L, -2, "__tostring");
  if (gc) {
    lua_pushcfunction(L, f_gc);
    lua_setfield(L, -2, "__gc");
  }
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int new_weak(lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

bool lasync__is_lua_task(las_task_t *t) { return las_task_step(t) == task_step; }

static lstate *open_state(lua_State *L) {
  lstate *S = lasync__state(L);
  if (S) return S;
  S = lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  S->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  lua_newtable(L);
  S->anchors = luaL_ref(L, LUA_REGISTRYINDEX);
  S->nextslot = 1;
  /* Lua futures have a finalizer only once they failed; C futures always (to drop their
   * reference on the C object). */
  S->mt_future = make_mt(L, S, "lasync.Future", future_methods, NULL, false);
  S->mt_future_gc = make_mt(L, S, "lasync.Future", future_methods, NULL, true);
  /* Tasks have a finalizer only once they failed (to report an error nobody retrieved):
   * a running task is anchored, a finished one has let go of its C object. */
  S->mt_task = make_mt(L, S, "lasync.Task", future_methods, task_methods, false);
  S->mt_task_gc = make_mt(L, S, "lasync.Task", future_methods, task_methods, true);
  S->cls_cancelled = make_class(L, "CancelledError", true);
  lua_pop(L, 1);
  S->cls_timeout = make_class(L, "TimeoutError", false);
  lua_pop(L, 1);
  S->cls_invalid = make_class(L, "InvalidStateError", false);
  lua_pop(L, 1);
  S->unretrieved = new_weak(L, "k");
  S->cfuts = new_weak(L, "v");
  S->chains = new_weak(L, "k");
  lua_newtable(L);
  S->strtb = luaL_ref(L, LUA_REGISTRYINDEX);
  S->handler = LUA_NOREF;
  S->loopbox = LUA_NOREF;
  S->attached = LUA_NOREF;
  S->slow = 0.1;
  S->shutdown = 5;
  lua_pushcfunction(L, tb_handler);
  S->tbfunc = luaL_ref(L, LUA_REGISTRYINDEX);
  lasync__open_loop(L, S);
  return S;
}

static const luaL_Reg module_funcs[] = {
  {"spawn", l_spawn}, {"await", l_await}, {"sleep", l_sleep}, {"future", l_future},
  {"current_task", l_current_task}, {"is_cancelled", l_is_cancelled},
  {"is_timeout", l_is_timeout}, {"run", lasync__run}, {"get_loop", lasync__get_loop},
  {"traceback", l_traceback},
  {NULL, NULL}};

/* The pure-Lua layer ships inside the module: register each file in package.preload, then
 * let the installers (combinators, sync) add their functions to the module table. */
static void load_embedded(lua_State *L, int mod) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const struct lasync_embedded *e = lasync_embedded; e->name; e++) {
    if (luaL_loadbuffer(L, e->src, e->size, e->chunkname) != LUA_OK) lua_error(L);
    lua_setfield(L, -2, e->name);
  }
  lua_pop(L, 1);
  static const char *installers[] = {"lasync.combinators", "lasync.sync", NULL};
  for (int i = 0; installers[i]; i++) {
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    int found = lua_getfield(L, -1, installers[i]) != LUA_TNIL;
    lua_pop(L, 2);
    if (!found) continue;
    lua_getglobal(L, "require");
    lua_pushstring(L, installers[i]);
    lua_call(L, 1, 1);
    lua_pushvalue(L, mod);
    lua_call(L, 1, 0);
  }
}

static int api_newfuture(lua_State *L, int nvalues, lasync_futhook hook, void *ud) {
  lstate *S = lasync__state(L);
  if (!S || !S->loop) return -1;
  int inl = nvalues > 1 && nvalues <= 8 ? nvalues : 0;
  lluafut *lf = (lluafut *)new_box(L, S, sizeof(lluafut), 2 + inl, K_FUTURE, S->mt_future);
  lf->inl = inl;
  lf->base.run = S->run;
  lf->hook = hook;
  lf->hookud = ud;
  return 0;
}

static int api_settle(lua_State *L, int fut, int n) {
  fut = lua_absindex(L, fut);
  lfut *fu = lasync__tofut(L, fut);
  lstate *S = fu ? fu->S : NULL;
  if (!fu || fu->kind != K_FUTURE || fu->final != LAS_PENDING || fu->run != S->run || !S->loop) {
    lua_pop(L, n);
    return 0;
  }
  ((lluafut *)fu)->hook = NULL;
  lua_checkstack(L, 4);
  lfuture_store(L, fu, fut, n);
  lfuture_settle(L, S, fu, fut, LAS_DONE);
  return 1;
}

static int api_watch_loop(lua_State *L, void (*cb)(void *, las_loop_t *), void *ud) {
  lstate *S = lasync__state(L);
  if (!S || !cb || S->nwatch >= 8) return -1;
  S->watch[S->nwatch].cb = cb;
  S->watch[S->nwatch].ud = ud;
  S->nwatch++;
  if (S->loop) cb(ud, S->loop);
  return 0;
}

/* Tells the watchers the state's loop is now S->loop (NULL: none). */
void lasync__loop_changed(lstate *S) {
  for (int i = 0; i < S->nwatch; i++) S->watch[i].cb(S->watch[i].ud, S->loop);
}

static const lasync_api api_table = {
  LASYNC_API_VERSION, lasync_getloop, las_loop_post, las_loop_hold, las_loop_release,
  las_loop_uv, las_loop_ref, las_loop_unref, lasync_report_error, api_newfuture, api_settle,
  api_watch_loop, las_loop_work_begin, las_loop_work_end};

int lasync_open(lua_State *L) {
  lstate *S = open_state(L);
  lua_pushlightuserdata(L, (void *)&api_table);
  lua_setfield(L, LUA_REGISTRYINDEX, LASYNC_API_KEY);
  lua_createtable(L, 0, 40);
  int mod = lua_gettop(L);
  lua_pushlightuserdata(L, S);
  luaL_setfuncs(L, module_funcs, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->cls_cancelled);
  lua_setfield(L, mod, "CancelledError");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->cls_timeout);
  lua_setfield(L, mod, "TimeoutError");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->cls_invalid);
  lua_setfield(L, mod, "InvalidStateError");
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, mod, "_VERSION");
  /* Loaded modules see lasync as already required while their installers run. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, mod);
  lua_setfield(L, -2, "lasync");
  lua_pop(L, 1);
  load_embedded(L, mod);
  lua_settop(L, mod);
  return 1;
}
