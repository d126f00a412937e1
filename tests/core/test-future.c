/* test-future.c - futures: states, copied values, done callbacks through the queue, refs. */
#include "task.h"
#include <string.h>

static las_loop_t *g_loop;
static ticker_t tk;

/* A done callback's record: how often it ran, in which pass, and what it saw. */
typedef struct {
  int calls;
  int pass;
  las_future_t *seen;
  las_state_t state;
  int order;
} probe_t;
static int order_counter;

static void probe_cb(void *a, void *b) {
  probe_t *p = a;
  p->calls++;
  p->pass = tk.pass;
  p->seen = b;
  p->state = las_future_state(b);
  p->order = ++order_counter;
}

static void test_states(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  ASSERT_NOT_NULL(f);
  ASSERT_EQ(las_future_state(f), LAS_PENDING);
  ASSERT_PTR_EQ(las_future_loop(f), loop);
  ASSERT(!las_future_is_task(f));
  ASSERT_NULL(las_task_from_future(f));
  ASSERT_EQ(las_future_complete(f, LAS_PENDING), LAS_EINVAL);
  ASSERT_EQ(las_future_state(f), LAS_PENDING);

  /* Done: values are copied, strings included (embedded NUL and all). */
  char buf[8] = {'a', '\0', 'b', 'c', 'x', 'x', 'x', 'x'};
  las_value_t v[5];
  v[0].type = LAS_VNIL;
  v[1].type = LAS_VBOOL, v[1].u.b = 1;
  v[2].type = LAS_VINT, v[2].u.i = -((int64_t)1 << 40);
  v[3].type = LAS_VNUM, v[3].u.n = 2.5;
  v[4].type = LAS_VSTR, v[4].u.s.ptr = buf, v[4].u.s.len = 4;
  ASSERT_OK(las_future_set_values(f, v, 5));
  memset(buf, 'z', sizeof buf);
  memset(v, 0, sizeof v);
  ASSERT_EQ(las_future_state(f), LAS_DONE);
  const las_value_t *got = NULL;
  ASSERT_EQ(las_future_values(f, &got), 5);
  ASSERT_NOT_NULL(got);
  ASSERT_EQ(got[0].type, LAS_VNIL);
  ASSERT_EQ(got[1].type, LAS_VBOOL);
  ASSERT_EQ(got[1].u.b, 1);
  ASSERT_EQ(got[2].type, LAS_VINT);
  ASSERT_EQ(got[2].u.i, -((int64_t)1 << 40));
  ASSERT_EQ(got[3].type, LAS_VNUM);
  ASSERT(got[3].u.n == 2.5);
  ASSERT_EQ(got[4].type, LAS_VSTR);
  ASSERT_EQ(got[4].u.s.len, 4);
  ASSERT(got[4].u.s.ptr != buf);
  ASSERT(memcmp(got[4].u.s.ptr, "a\0bc", 4) == 0);
  ASSERT_EQ(got[4].u.s.ptr[4], '\0'); /* copies are NUL-terminated for C callers */
  ASSERT_NULL(las_future_error_message(f));

  /* Set twice: refused, and the first result stays. */
  las_value_t one = {.type = LAS_VINT, .u.i = 1};
  ASSERT_EQ(las_future_set_values(f, &one, 1), LAS_ESTATE);
  ASSERT_EQ(las_future_set_error(f, "late"), LAS_ESTATE);
  ASSERT_EQ(las_future_complete(f, LAS_FAILED), LAS_ESTATE);
  ASSERT_EQ(las_future_cancel(f), 0);
  ASSERT_EQ(las_future_state(f), LAS_DONE);
  ASSERT_EQ(las_future_values(f, &got), 5);
  ASSERT_EQ(got[2].u.i, -((int64_t)1 << 40));
  las_future_unref(f);

  /* Failed: the message is copied; NULL gives a generic one. */
  char msg[] = "boom";
  f = las_future_new(loop);
  ASSERT_OK(las_future_set_error(f, msg));
  msg[0] = 'X';
  ASSERT_EQ(las_future_state(f), LAS_FAILED);
  ASSERT(strcmp(las_future_error_message(f), "boom") == 0);
  ASSERT_EQ(las_future_set_values(f, NULL, 0), LAS_ESTATE);
  las_future_unref(f);
  f = las_future_new(loop);
  ASSERT_OK(las_future_set_error(f, NULL));
  ASSERT_NOT_NULL(las_future_error_message(f));
  las_future_unref(f);

  /* Cancelled: once. */
  f = las_future_new(loop);
  ASSERT_EQ(las_future_cancel(f), 1);
  ASSERT_EQ(las_future_state(f), LAS_CANCELLED);
  ASSERT_EQ(las_future_cancel(f), 0);
  ASSERT_EQ(las_future_set_values(f, NULL, 0), LAS_ESTATE);
  ASSERT_EQ(las_future_set_error(f, "x"), LAS_ESTATE);
  las_future_unref(f);

  /* Completed by the embedding layer: no C values. Zero C values is not the same thing. */
  f = las_future_new(loop);
  ASSERT_OK(las_future_complete(f, LAS_DONE));
  ASSERT_EQ(las_future_values(f, NULL), -1);
  las_future_unref(f);
  f = las_future_new(loop);
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  ASSERT_EQ(las_future_values(f, NULL), 0);
  las_future_unref(f);

  /* Bad arguments. */
  f = las_future_new(loop);
  ASSERT_EQ(las_future_set_values(f, NULL, 1), LAS_EINVAL);
  ASSERT_EQ(las_future_set_values(f, &one, -1), LAS_EINVAL);
  ASSERT_EQ(las_future_add_callback(f, NULL, NULL), LAS_EINVAL);
  ASSERT_EQ(las_future_state(f), LAS_PENDING);
  ASSERT_NULL(las_future_new(NULL));
  las_future_unref(f);
  las_future_unref(NULL);

  /* None of this queued anything: there were no callbacks. */
  ASSERT_EQ(las_loop_ready_count(loop), 0);
  CLOSE_LOOP(loop);
}

/* Done callbacks are never called from inside set/cancel: they go through the ready queue
 * and run in the next pass, in registration order, with the future as their second word. */
static las_future_t *set_in_cb_future;
static void set_in_cb(void *a, void *b) {
  (void)a;
  (void)b;
  ASSERT_OK(las_future_set_values(set_in_cb_future, NULL, 0));
}

static void test_callbacks_not_inline(void) {
  las_loop_t *loop = g_loop = new_loop();
  probe_t p1 = {0}, p2 = {0}, p3 = {0};
  order_counter = 0;
  las_future_t *f = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p1));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p2));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p3));
  ASSERT_EQ(las_future_callback_count(f), 3);
  las_cb cb;
  void *a;
  ASSERT_OK(las_future_callback_at(f, 1, &cb, &a));
  ASSERT(cb == probe_cb);
  ASSERT_PTR_EQ(a, &p2);
  ASSERT_EQ(las_future_callback_at(f, 3, &cb, &a), LAS_EINVAL);
  ASSERT_EQ(las_future_callback_at(f, -1, &cb, &a), LAS_EINVAL);
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  ASSERT_EQ(p1.calls + p2.calls + p3.calls, 0);
  ASSERT_EQ(las_loop_ready_count(loop), 3);
  ASSERT_EQ(las_future_callback_count(f), 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(p1.calls, 1);
  ASSERT_EQ(p2.calls, 1);
  ASSERT_EQ(p3.calls, 1);
  ASSERT(p1.order < p2.order && p2.order < p3.order);
  ASSERT_PTR_EQ(p1.seen, f);
  ASSERT_EQ(p1.state, LAS_DONE);

  /* A callback added after completion also waits for a pass. */
  probe_t late = {0};
  ASSERT_OK(las_future_add_callback(f, probe_cb, &late));
  ASSERT_EQ(late.calls, 0);
  ASSERT_EQ(las_loop_ready_count(loop), 1);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(late.calls, 1);
  ASSERT_PTR_EQ(late.seen, f);
  las_future_unref(f);

  /* Cancel and set_error queue the same way. */
  probe_t pc = {0}, pe = {0};
  las_future_t *fc = las_future_new(loop), *fe = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(fc, probe_cb, &pc));
  ASSERT_OK(las_future_add_callback(fe, probe_cb, &pe));
  ASSERT_EQ(las_future_cancel(fc), 1);
  ASSERT_OK(las_future_set_error(fe, "e"));
  ASSERT_EQ(pc.calls + pe.calls, 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(pc.calls, 1);
  ASSERT_EQ(pc.state, LAS_CANCELLED);
  ASSERT_EQ(pe.calls, 1);
  ASSERT_EQ(pe.state, LAS_FAILED);
  las_future_unref(fc);
  las_future_unref(fe);

  /* A future completed during pass 1 runs its callbacks in pass 2. */
  probe_t pn = {0};
  set_in_cb_future = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(set_in_cb_future, probe_cb, &pn));
  ticker_start(&tk, loop);
  ASSERT_OK(las_call_soon(loop, set_in_cb, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(pn.calls, 1);
  ASSERT_EQ(pn.pass, 2);
  las_future_unref(set_in_cb_future);
  CLOSE_LOOP(loop);
}

static void test_remove_callback(void) {
  las_loop_t *loop = g_loop = new_loop();
  probe_t p1 = {0}, p2 = {0};
  las_future_t *f = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p1));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p2));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p1));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p2));
  ASSERT_OK(las_future_add_callback(f, probe_cb, &p1));
  ASSERT_EQ(las_future_remove_callback(f, probe_cb, &p1), 3);
  ASSERT_EQ(las_future_remove_callback(f, probe_cb, &p1), 0);
  ASSERT_EQ(las_future_remove_callback(f, set_in_cb, &p2), 0);
  ASSERT_EQ(las_future_callback_count(f), 2);
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(p1.calls, 0);
  ASSERT_EQ(p2.calls, 2);
  /* After completion nothing is registered any more. */
  ASSERT_EQ(las_future_remove_callback(f, probe_cb, &p2), 0);
  las_future_unref(f);
  CLOSE_LOOP(loop);
}

/* A callback reads the future after its creator dropped its reference: the queued entry
 * holds its own reference (ASan checks the reads, LSan that it is freed afterwards). */
static void read_value_cb(void *a, void *b) {
  probe_cb(a, b);
  const las_value_t *v;
  ASSERT_EQ(las_future_values(b, &v), 1);
  ASSERT_EQ(v[0].type, LAS_VSTR);
  ASSERT(strcmp(v[0].u.s.ptr, "still here") == 0);
}

static void test_refcounts(void) {
  las_loop_t *loop = g_loop = new_loop();
  probe_t p = {0}, never = {0};
  las_future_t *f = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(f, read_value_cb, &p));
  las_value_t v = {.type = LAS_VSTR, .u.s = {"still here", 10}};
  ASSERT_OK(las_future_set_values(f, &v, 1));
  las_future_unref(f);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(p.calls, 1);

  /* Extra references are balanced, and a pending future dropped with callbacks registered
   * never calls them. */
  f = las_future_new(loop);
  las_future_ref(f);
  las_future_ref(f);
  las_future_unref(f);
  las_future_unref(f);
  ASSERT_OK(las_future_add_callback(f, probe_cb, &never));
  las_future_unref(f);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(never.calls, 0);
  CLOSE_LOOP(loop);
}

/* las_future_hold_loop keeps run going until the future completes, and no longer. */
static las_future_t *held;
static void complete_held(void *a, void *b) {
  (void)a;
  (void)b;
  ASSERT_OK(las_future_set_values(held, NULL, 0));
}

static void test_hold_loop(void) {
  las_loop_t *loop = g_loop = new_loop();
  probe_t p = {0};
  held = las_future_new(loop);
  ASSERT(!las_loop_alive(loop));
  las_future_hold_loop(held);
  las_future_hold_loop(held); /* once is enough: the second call changes nothing */
  ASSERT(las_loop_alive(loop));
  ASSERT_OK(las_future_add_callback(held, probe_cb, &p));
  las_timer_t *t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(t, las_loop_time(loop) + 0.003, complete_held, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(p.calls, 1);
  ASSERT(!las_loop_alive(loop));
  las_future_unref(held);

  /* Dropping a pending future that holds the loop releases the hold. */
  held = las_future_new(loop);
  las_future_hold_loop(held);
  ASSERT(las_loop_alive(loop));
  las_future_unref(held);
  ASSERT(!las_loop_alive(loop));
  las_timer_free(t);
  CLOSE_LOOP(loop);
}

static void never_posted(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
  ASSERT(0);
}

static void other_step(las_task_t *t, void *ud) {
  (void)ud;
  ASSERT_OK(las_future_complete(las_task_future(t), LAS_DONE)); /* its own step may */
}

/* Misuse gets LAS_EINVAL (or a harmless answer), never a crash or a corrupted future. */
static void test_misuse(void) {
  las_loop_t *loop = g_loop = new_loop();
  ASSERT_NULL(las_timer_new(NULL));
  ASSERT(las_timer_when(NULL) != las_timer_when(NULL)); /* NaN */
  las_future_t *f = las_future_new(loop);
  ASSERT_EQ(las_future_complete(f, (las_state_t)7), LAS_EINVAL);
  ASSERT_EQ(las_future_complete(f, LAS_PENDING), LAS_EINVAL);
  las_value_t bad = {.type = LAS_VSTR, .u.s = {NULL, 5}};
  ASSERT_EQ(las_future_set_values(f, &bad, 1), LAS_EINVAL);
  ASSERT_EQ(las_future_post_values(f, &bad, 1), LAS_EINVAL);
  ASSERT_EQ(las_future_state(f), LAS_PENDING);
  las_value_t empty = {.type = LAS_VSTR, .u.s = {NULL, 0}};
  ASSERT_OK(las_future_set_values(f, &empty, 1));
  const las_value_t *v;
  ASSERT_EQ(las_future_values(f, &v), 1);
  ASSERT_EQ(v[0].u.s.len, 0);
  ASSERT_EQ(strcmp(v[0].u.s.ptr, ""), 0);
  las_future_unref(f);

  /* A task's outcome is its own step's to set: from outside, only a cancel. */
  las_task_t *t = las_task_new(loop, other_step, NULL);
  las_value_t one = {.type = LAS_VINT, .u.i = 1};
  ASSERT_EQ(las_future_set_values(las_task_future(t), &one, 1), LAS_EINVAL);
  ASSERT_EQ(las_future_set_error(las_task_future(t), "x"), LAS_EINVAL);
  ASSERT_EQ(las_future_complete(las_task_future(t), LAS_DONE), LAS_EINVAL);
  ASSERT_EQ(las_future_post_values(las_task_future(t), &one, 1), LAS_EINVAL);
  /* ... and it waits only on futures of its own loop. */
  las_loop_t *other = new_loop();
  las_future_t *g = las_future_new(other);
  ASSERT_EQ(las_task_wait(t, g), LAS_EINVAL);
  las_future_unref(g);
  CLOSE_LOOP(other);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_DONE);
  las_future_unref(las_task_future(t));

  /* destroy after a successful close drops nothing twice, even while a reference keeps the
   * memory (a thread that may still post). */
  las_loop_ref(loop);
  CLOSE_LOOP(loop);
  las_loop_destroy(loop);
  ASSERT_EQ(las_loop_post(loop, never_posted, NULL), LAS_ECLOSED);
  las_loop_unref(loop);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_states);
  RUN_TEST(test_callbacks_not_inline);
  RUN_TEST(test_remove_callback);
  RUN_TEST(test_refcounts);
  RUN_TEST(test_hold_loop);
  RUN_TEST(test_misuse);
  return 0;
}
