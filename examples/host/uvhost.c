/* uvhost.c - a libuv application that runs Lua tasks on its own loop.
 *
 * The host already has a uv loop and drives it with uv_run; lasync_attach lets a script's
 * tasks run on that same loop, next to the host's handles (no lasync.run, no second loop).
 * Here the host's handle is a "sensor": a timer that takes a reading every 10 ms and hands
 * it to the script's on_reading function (plain Lua, called from the timer callback). The
 * script's tasks process the readings asynchronously. After 10 readings the host detaches
 * lasync, which cancels the script's tasks and lets their cleanup run, then closes its loop.
 *
 *   usage: lasync-uvhost script.lua
 */
#include "lasync.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

static int readings;

static void sensor_cb(uv_timer_t *t) {
  lua_State *L = t->data;
  readings++;
  lua_getglobal(L, "on_reading");
  lua_pushinteger(L, readings);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "on_reading: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (readings == 10) uv_timer_stop(t);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua\n", argv[0]);
    return 2;
  }
  uv_loop_t *uv = uv_default_loop();
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "lasync", lasync_open, 0);
  lua_pop(L, 1);
  int rc = lasync_attach(L, uv);
  if (rc != 0) {
    fprintf(stderr, "lasync_attach: %s\n", las_strerror(rc));
    return 1;
  }
  if (luaL_dofile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }

  uv_timer_t sensor;
  uv_timer_init(uv, &sensor);
  sensor.data = L;
  uv_timer_start(&sensor, sensor_cb, 10, 10);
  /* Returns once neither the sensor nor the script's tasks can make progress. */
  uv_run(uv, UV_RUN_DEFAULT);

  /* Detach: the script's tasks are cancelled, and their cleanup runs on the host's loop. */
  while ((rc = lasync_detach(L, 0)) == LAS_EBUSY) uv_run(uv, UV_RUN_ONCE);
  if (rc != 0) fprintf(stderr, "lasync_detach: %s\n", las_strerror(rc));
  lua_close(L);
  uv_close((uv_handle_t *)&sensor, NULL);
  uv_run(uv, UV_RUN_DEFAULT); /* the close callbacks, lasync's handles' included */
  rc = uv_loop_close(uv);
  printf("host: lasync detached, loop closed %s\n", rc == 0 ? "cleanly" : uv_strerror(rc));
  return rc == 0 ? 0 : 1;
}
