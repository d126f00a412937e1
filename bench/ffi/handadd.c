/* handadd.c - the hand-written lua_CFunction binding of `int add(int, int)` that the FFI
 * call overhead is measured against (bench/ffi/run.sh). */
#include <lua.h>
#include <lauxlib.h>

__attribute__((noinline)) static int add(int a, int b) { return a + b; }

static int l_add(lua_State *L) {
  lua_pushinteger(L, add((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)));
  return 1;
}

int luaopen_handadd(lua_State *L);
int luaopen_handadd(lua_State *L) {
  lua_pushcfunction(L, l_add);
  return 1;
}
