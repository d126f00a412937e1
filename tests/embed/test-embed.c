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

/* host.ctask(): a C task of the host's own on lasync's loop; its first step waits on
 * something only the host tracks (las_task_wait_external), its next finishes it, cancelled
 * or not. host.cancel_ctask() cancels it from C; host.ctask_state() says how it ended. */
static las_task_t *ctask;
static char ctask_data; /* deliberately tiny: lasync must never read it as its own */
static void ctask_step(las_task_t *t, void *ud) {
  CHECK(ud == &ctask_data);
  if (!las_task_waited(t) && las_future_state(las_task_future(t)) == LAS_PENDING &&
      !las_task_take_cancel(t)) {
    static int first = 1;
    if (first) {
      first = 0;
      CHECK(las_task_wait_external(t) == 0);
      return;
    }
  }
  CHECK(las_future_complete(las_task_future(t), LAS_CANCELLED) == 0);
}
static int l_ctask(lua_State *L) {
  ctask = las_task_new(lasync_getloop(L), ctask_step, &ctask_data);
  CHECK(ctask && las_task_schedule(ctask) == 0);
  return 0;
}
static int l_cancel_ctask(lua_State *L) {
  (void)L;
  CHECK(las_task_cancel(ctask) == 1); /* the loop's cancel hook sees a task not lasync's */
  CHECK(las_task_wake(ctask) == 0);   /* the host wakes what it tracks */
  return 0;
}
static int l_ctask_state(lua_State *L) {
  las_state_t st = las_future_state(las_task_future(ctask));
  lua_pushstring(L, st == LAS_CANCELLED ? "cancelled" : st == LAS_PENDING ? "pending" : "other");
  if (st != LAS_PENDING) {
    las_future_unref(las_task_future(ctask));
    ctask = NULL;
  }
  return 1;
}
/* host.set_task_result(task): tries to set a Lua task's outcome from C. */
static int l_set_task_result(lua_State *L) {
  las_value_t v = {.type = LAS_VINT, .u.i = 1};
  int rc = las_future_set_values(lasync_tofuture(L, 1), &v, 1);
  lua_pushstring(L, rc == LAS_EINVAL ? "refused" : "accepted");
  return 1;
}

static lua_State *new_state(void) {
  static const luaL_Reg host[] = {{"threaded", l_threaded}, {"keep", l_keep}, {"ctask", l_ctask},
                                  {"cancel_ctask", l_cancel_ctask}, {"ctask_state", l_ctask_state},
                                  {"set_task_result", l_set_task_result}, {NULL, NULL}};
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

  /* remove_done_callback on a kept C future whose callbacks were registered in an earlier
   * run (whose anchors are gone): nothing to remove, nothing touched, also in a later run
   * whose own callbacks must survive it. */
  L = new_state();
  run(L, "local lasync = require 'lasync'\n"
         "lasync.run(function() kept_f = host.keep(); kept_f:add_done_callback(print) end)\n"
         "assert(kept_f:remove_done_callback(print) == 0)\n"
         "local ran = false\n"
         "lasync.run(function()\n"
         "  local g = lasync.future()\n"
         "  g:add_done_callback(function() ran = true end)\n"
         "  assert(kept_f:remove_done_callback(print) == 0)\n"
         "  g:set_result()\n"
         "  lasync.sleep(0)\n"
         "end)\n"
         "assert(ran)\n");
  lua_close(L);
  las_future_unref(kept);

  /* A host's own C task on lasync's loop: cancelling it while it waits externally, and a slow
   * step of it in debug mode, must not be taken for a Lua task's. A Lua task's outcome cannot
   * be set from C, and lasync_loopstate knows a loop that is not lasync's. */
  L = new_state();
  run(L, "local lasync = require 'lasync'\n"
         "lasync.run(function()\n"
         "  lasync.get_loop():set_debug(true)\n"
         "  lasync.get_loop().slow_callback_duration = 0\n"
         "  lasync.get_loop():set_exception_handler(function() end)\n"
         "  local t = host.ctask()\n"
         "  lasync.sleep(0)\n"
         "  host.cancel_ctask()\n"
         "  lasync.sleep(0); lasync.sleep(0)\n"
         "  local st = host.ctask_state()\n"
         "  assert(st == 'cancelled', st)\n"
         "  local me = lasync.current_task()\n"
         "  assert(host.set_task_result(me) == 'refused')\n"
         "end)\n");
  lua_close(L);
  las_loop_t *foreign;
  CHECK(las_loop_new(&foreign, NULL) == 0);
  static int not_lasync;
  las_loop_set_data(foreign, &not_lasync);
  CHECK(lasync_loopstate(foreign) == NULL);
  CHECK(las_loop_close(foreign) == 0);

  /* lua_close in the middle of nothing: a state that opened lasync but never ran. */
  L = new_state();
  lua_close(L);
  printf("test-embed: ok\n");
  return 0;
}
