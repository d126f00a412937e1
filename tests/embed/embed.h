/* embed.h - what the embedding tests share: checks that abort, a state with lasync open and
 * a `host` table of C functions, scripts that must not fail, and host.threaded(). */
#ifndef EMBED_H
#define EMBED_H

#include "lasync.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #x); abort(); } } while (0)

/* A fresh state with the standard libraries, lasync, and the global `host` = funcs. */
static inline lua_State *embed_state(const luaL_Reg *funcs) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "lasync", lasync_open, 0);
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setglobal(L, "host");
  return L;
}

static inline void run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "script failed: %s\n", lua_tostring(L, -1));
    abort();
  }
}

static inline void *embed_resolver(void *arg) {
  las_future_t *f = arg;
  las_value_t v[2] = {{.type = LAS_VSTR, .u.s = {"from a thread", 13}}, {.type = LAS_VINT, .u.i = 42}};
  CHECK(las_future_post_values(f, v, 2) == 0); /* consumes the thread's reference */
  return NULL;
}

/* host.threaded() -> a C future the script awaits; a thread resolves it with two values. */
static inline int l_threaded(lua_State *L) {
  las_future_t *f = las_future_new(lasync_getloop(L));
  CHECK(f);
  las_future_hold_loop(f);
  lasync_pushfuture(L, f);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, embed_resolver, f) == 0);
  pthread_detach(th);
  return 1;
}

#endif
