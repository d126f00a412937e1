/* A minimal `lua script.lua args...` linked statically against Debian's liblua5.4.a,
   which (unlike the stripped /usr/bin/lua5.4) keeps the symbols of the Lua core
   (luaV_execute, luaH_*, luaC_*...), so perf/callgrind can name them.  Linked with
   -Wl,-E so that C modules (lasync.so, luv.so) resolve the lua_* API from it, as they do
   from the stock interpreter.  Built by bench/prof/profile.sh. */
#include <stdio.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s script.lua [args]\n", argv[0]); return 2; }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, argv[1]) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); return 1; }
  for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
  int st = lua_pcall(L, argc - 2, 0, 1);
  if (st != LUA_OK) fprintf(stderr, "luaprof: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return st == LUA_OK ? 0 : 1;
}
