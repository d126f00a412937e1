/* test-embed.c - the embedding API against a real lua_State: C futures handed to scripts,
 * resolved from a foreign thread, and what happens when the state closes with work pending.
 * Runs under the sanitizers with the rest of the suite. */
#include "embed.h"

static las_future_t *kept; /* a future the host keeps past the end of the run */

/* host.keep() -> a C future the host also keeps, and never resolves before the run ends. */
static int l_keep(lua_State *L) {
  las_future_t *f = las_future_new(lasync_getloop(L));
  CHECK(f);
  las_future_ref(f);
  kept = f;
  lasync_pushfuture(L, f);
  las_future_unref(f);
  return 1;
}

static lua_State *new_state(void) {
  static const luaL_Reg host[] = {{"threaded", l_threaded}, {"keep", l_keep}, {NULL, NULL}};
  return embed_state(host);
}

int main(void) {
  /* A C future resolved from a foreign thread is awaited like any other. */
  lua_State *L = new_state();
  run(L, "local lasync = require 'lasync'\n"
         "local s, n = lasync.run(function() return host.threaded():await() end)\n"
         "assert(s == 'from a thread' and n == 42, tostring(s))\n");
  lua_close(L);

  /* The host keeps a future past the run and the state; a Lua done callback is registered
   * on it. Posting to it afterwards is a definite error, and no callback ever runs against
   * the freed state. */
  L = new_state();
  run(L, "local lasync = require 'lasync'\n"
         "lasync.run(function()\n"
         "  host.keep():add_done_callback(function() error('must never run') end)\n"
         "end)\n");
  lua_close(L);
  las_value_t v = {.type = LAS_VINT, .u.i = 1};
  CHECK(las_future_post_values(kept, &v, 1) == LAS_ECLOSED);
  CHECK(las_future_state(kept) == LAS_PENDING);
  las_future_unref(kept);

  /* A task left waiting on a kept future when the run ends is cancelled, and (as in asyncio)
   * cancelling it cancels the future it awaits: the host sees that state afterwards. */
  L = new_state();
  run(L, "local lasync = require 'lasync'\n"
         "local seen\n"
         "lasync.run(function()\n"
         "  local f = host.keep()\n"
         "  f:add_done_callback(function(g) seen = g:cancelled() end)\n"
         "  lasync.spawn(function() f:await() end)\n"
         "  lasync.sleep(0)\n"
         "end)\n"
         "assert(seen == true, 'the done callback saw the cancellation')\n");
  lua_close(L);
  CHECK(las_future_state(kept) == LAS_CANCELLED);
  CHECK(las_future_post_values(kept, &v, 1) == LAS_ECLOSED);
  las_future_unref(kept);

  /* lua_close in the middle of nothing: a state that opened lasync but never ran. */
  L = new_state();
  lua_close(L);
  printf("test-embed: ok\n");
  return 0;
}
