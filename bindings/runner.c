/* runner.c - `lasync script.lua args...`: the script runs as the main task, so it can await
 * at top level. Like stock lua it gets `arg` and `...`; on error it prints the message and
 * the traceback of the task where the error was raised, and exits 1. */
#include "lasync.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

static const char *driver =
  "local lasync, chunk, n = ...\n"
  "local tb, tberr\n"
  "local function handler(e)\n"
  "  tberr = e\n"
  "  tb = lasync.traceback(e) or debug.traceback(nil, 2)\n"
  "  return e\n"
  "end\n"
  "local ok, err = pcall(lasync.run, function(...)\n"
  "  local r = table.pack(xpcall(chunk, handler, ...))\n"
  "  if not r[1] then error(r[2], 0) end\n"
  "  return table.unpack(r, 2, r.n)\n"
  "end, table.unpack(arg, 1, n))\n"
  "if ok then return 0 end\n"
  "local msg, mt = err, debug.getmetatable(err)\n"
  "if type(err) ~= 'string' and type(err) ~= 'number' then\n"
  "  if type(mt) == 'table' and rawget(mt, '__tostring') ~= nil then\n"
  "    local okm, s = pcall(tostring, err)\n"
  "    msg = okm and s or '(error object is a ' .. type(err) .. ' whose __tostring failed)'\n"
  "  else\n"
  "    msg = '(error object is a ' .. type(err) .. ' value)'\n"
  "  end\n"
  "end\n"
  "if not rawequal(err, tberr) then tb = lasync.traceback(err) end\n"
  "if tb then tb = tb:gsub(\"\\n\\t%[C%]: in function 'xpcall'\\n\\tlasync:%d+: in function <lasync:%d+>\", '', 1) end\n"
  "io.stderr:write('lasync: ', msg, '\\n', tb or '', '\\n')\n"
  "return 1\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args...]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "lasync: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  luaL_openlibs(L);
  /* arg, as stock lua builds it: the script at 0, its arguments from 1, the runner at -1. */
  lua_createtable(L, argc - 2, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  luaL_requiref(L, "lasync", lasync_open, 0);
  int status = 1;
  if (luaL_loadfile(L, strcmp(argv[1], "-") == 0 ? NULL : argv[1]) != LUA_OK) { /* -: stdin */
    fprintf(stderr, "lasync: %s\n", lua_tostring(L, -1));
  } else if (luaL_loadbuffer(L, driver, strlen(driver), "=lasync") == LUA_OK) {
    lua_insert(L, -3);
    lua_pushinteger(L, argc - 2);
    if (lua_pcall(L, 3, 1, 0) == LUA_OK) status = (int)lua_tointeger(L, -1);
    else fprintf(stderr, "lasync: %s\n", lua_tostring(L, -1));
  }
  lua_close(L);
  return status;
}
