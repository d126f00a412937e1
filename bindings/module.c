/* module.c - the entry point stock lua5.4 finds as lasync.so. */
#include "lasync.h"

LUA_API int luaopen_lasync(lua_State *L);

int luaopen_lasync(lua_State *L) { return lasync_open(L); }
