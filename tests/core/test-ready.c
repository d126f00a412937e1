/* test-ready.c - the ready queue: call_soon order, one pass per iteration, las_loop_stop. */
#include "task.h"

/* The log of what ran, as (id, pass) pairs; the ticker numbers the passes. */
#define LOG_MAX 8192
static int log_id[LOG_MAX], log_iter[LOG_MAX], nlog;
static ticker_t tk;
static las_loop_t *g_loop;

static void log_cb(void *a, void *b) {
  (void)b;
  ASSERT_LT(nlog, LOG_MAX);
  log_id[nlog] = (int)(intptr_t)a;
  log_iter[nlog] = tk.pass;
  nlog++;
}

static void reset_log(void) {
  nlog = 0;
  tk.pass = 0;
}

/* Runs the loop with the ticker numbering its passes; returns how many passes ran work
 * (the ticker's own last, empty pass is not counted). */
static int run_counting(las_loop_t *loop) {
  ASSERT_OK(las_loop_run(loop));
  return tk.pass - 1;
}

static void test_fifo(void) {
  las_loop_t *loop = new_loop();
  reset_log();
  for (int i = 0; i < 100; i++) ASSERT_OK(las_call_soon(loop, log_cb, (void *)(intptr_t)i, NULL));
  ASSERT_EQ(las_loop_ready_count(loop), 100);
  /* Nothing runs at call time: call_soon only queues. */
  ASSERT_EQ(nlog, 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 100);
  for (int i = 0; i < 100; i++) ASSERT_EQ(log_id[i], i);
  ASSERT_EQ(las_loop_ready_count(loop), 0);
  CLOSE_LOOP(loop);
}

static void test_bad_args(void) {
  las_loop_t *loop = new_loop();
  ASSERT_EQ(las_call_soon(loop, NULL, NULL, NULL), LAS_EINVAL);
  ASSERT_EQ(las_call_soon(NULL, log_cb, NULL, NULL), LAS_EINVAL);
  ASSERT_EQ(las_loop_ready_count(loop), 0);
  /* A loop with nothing to do returns from run at once. */
  ASSERT_OK(las_loop_run(loop));
  ASSERT(!las_loop_alive(loop));
  ASSERT_EQ(las_loop_run_once(loop), 0);
  CLOSE_LOOP(loop);
}

/* A chain: each link schedules the next, so link k must run in iteration k + 1. */
static void chain_cb(void *a, void *b) {
  int depth = (int)(intptr_t)b;
  log_cb(a, NULL);
  if (depth > 0)
    ASSERT_OK(las_call_soon(g_loop, chain_cb, (void *)((intptr_t)a + 1), (void *)(intptr_t)(depth - 1)));
}

static void test_one_pass(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  ticker_start(&tk, loop);
  /* A0 -> A1 -> A2 -> A3 is a chain; B (id 100) was ready alongside A0. */
  ASSERT_OK(las_call_soon(loop, chain_cb, (void *)0, (void *)3));
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)100, NULL));
  int iters = run_counting(loop);
  ASSERT_EQ(nlog, 5);
  ASSERT_EQ(log_id[0], 0);
  ASSERT_EQ(log_iter[0], 1);
  ASSERT_EQ(log_id[1], 100); /* B runs in the first pass, after A0 but before A1 */
  ASSERT_EQ(log_iter[1], 1);
  for (int k = 1; k <= 3; k++) {
    ASSERT_EQ(log_id[k + 1], k);
    ASSERT_EQ(log_iter[k + 1], k + 1);
  }
  ASSERT_EQ(iters, 4);
  CLOSE_LOOP(loop);
}

/* las_loop_run_once runs exactly one iteration (las.h): a callback that keeps rescheduling
 * itself runs once per call, and run_once returns between runs. */
static int self_left;
static void self_cb(void *a, void *b) {
  log_cb(a, b);
  if (--self_left > 0) ASSERT_OK(las_call_soon(g_loop, self_cb, a, b));
}

static void test_run_once_one_iteration(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  self_left = 50;
  ASSERT_OK(las_call_soon(loop, self_cb, (void *)7, NULL));
  for (int i = 1; i <= 50; i++) {
    int more = las_loop_run_once(loop);
    ASSERT_EQ(nlog, i);
    ASSERT_EQ(more, i < 50);
  }
  CLOSE_LOOP(loop);
}

/* Wraparound and growth of the ring while a pass consumes it: 1000 callbacks each schedule
 * the callback 1000 ids later, so ids must come out strictly increasing, 1000 per pass. */
static void wrap_cb(void *a, void *b) {
  intptr_t id = (intptr_t)a;
  log_cb(a, b);
  if (id + 1000 < 6000) ASSERT_OK(las_call_soon(g_loop, wrap_cb, (void *)(id + 1000), NULL));
}

static void test_ring_wrap(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  /* Start with a partly consumed ring so that the next pushes wrap. */
  for (int i = 0; i < 40; i++) ASSERT_OK(las_call_soon(loop, log_cb, (void *)(intptr_t)-1, NULL));
  ASSERT_OK(las_loop_run(loop));
  reset_log();
  ticker_start(&tk, loop);
  for (intptr_t i = 0; i < 1000; i++) ASSERT_OK(las_call_soon(loop, wrap_cb, (void *)i, NULL));
  int iters = run_counting(loop);
  ASSERT_EQ(nlog, 6000);
  for (int i = 0; i < 6000; i++) {
    ASSERT_EQ(log_id[i], i);
    ASSERT_EQ(log_iter[i], i / 1000 + 1);
  }
  ASSERT_EQ(iters, 6);
  CLOSE_LOOP(loop);
}

/* las_loop_stop inside a pass: the rest of that pass still runs (an iteration is never cut
 * in half), work queued for later stays queued, and a second run picks it up. */
static void stop_cb(void *a, void *b) {
  log_cb(a, b);
  las_loop_stop(g_loop);
  ASSERT_OK(las_call_soon(g_loop, log_cb, (void *)3, NULL));
}

static void test_stop(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)1, NULL));
  ASSERT_OK(las_call_soon(loop, stop_cb, (void *)2, NULL));
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)4, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 3);
  ASSERT_EQ(log_id[0], 1);
  ASSERT_EQ(log_id[1], 2);
  ASSERT_EQ(log_id[2], 4);
  ASSERT_EQ(las_loop_ready_count(loop), 1);
  ASSERT(las_loop_alive(loop));
  /* The stop was consumed: this run goes on until the work is done. */
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 4);
  ASSERT_EQ(log_id[3], 3);
  ASSERT_EQ(las_loop_ready_count(loop), 0);
  CLOSE_LOOP(loop);
}

/* Stopping from a timer while another timer is far away returns promptly, leaving it
 * pending; a stop requested before run does not make the next run return early. */
static void timer_stop_cb(void *a, void *b) {
  log_cb(a, b);
  las_loop_stop(g_loop);
}

static void test_stop_with_pending_timer(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  las_timer_t *far = las_timer_new(loop), *near = las_timer_new(loop);
  ASSERT_NOT_NULL(far);
  ASSERT_NOT_NULL(near);
  double t0 = las_loop_time(loop);
  ASSERT_OK(las_timer_start(far, t0 + 30, log_cb, (void *)9, NULL));
  ASSERT_OK(las_timer_start(near, t0 + 0.002, timer_stop_cb, (void *)8, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 1);
  ASSERT_EQ(log_id[0], 8);
  ASSERT(las_timer_active(far));
  ASSERT_LT(las_loop_time(loop) - t0, 20);
  las_timer_free(far);
  las_timer_free(near);
  ASSERT_EQ(las_loop_timer_count(loop), 0);

  /* A stale stop from outside a run is forgotten by the next run. */
  las_loop_stop(loop);
  for (int i = 0; i < 3; i++) ASSERT_OK(las_call_soon(loop, chain_cb, (void *)(intptr_t)(10 * i), (void *)2));
  reset_log();
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 9);
  CLOSE_LOOP(loop);
}

/* Running the loop from inside one of its callbacks is refused. */
static int nested_rc;
static void nested_cb(void *a, void *b) {
  (void)a;
  (void)b;
  nested_rc = las_loop_run(g_loop);
}

static void test_nested_run(void) {
  las_loop_t *loop = g_loop = new_loop();
  nested_rc = 0;
  ASSERT_OK(las_call_soon(loop, nested_cb, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nested_rc, LAS_ERUNNING);
  CLOSE_LOOP(loop);
}

/* Debug mode reports slow plain callbacks with task == NULL. */
static int slow_calls;
static las_task_t *slow_task = (las_task_t *)1;
static las_cb slow_fn;
static void slow_hook(las_loop_t *loop, las_task_t *task, las_cb fn, double seconds) {
  ASSERT_PTR_EQ(loop, g_loop);
  slow_fn = fn;
  ASSERT_GE(seconds * 1e9, 0);
  slow_task = task;
  slow_calls++;
}

static void test_debug_hook(void) {
  las_loop_t *loop = g_loop = new_loop();
  reset_log();
  las_loop_set_debug(loop, 1, 0.0, slow_hook);
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)1, NULL));
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)2, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(slow_calls, 2);
  ASSERT_NULL(slow_task);
  ASSERT(slow_fn == log_cb); /* the hook is told which callback it was */
  las_loop_set_debug(loop, 0, -1, NULL);
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)3, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(slow_calls, 2);
  ASSERT_EQ(nlog, 3);
  CLOSE_LOOP(loop);
}

static void test_data_and_strerror(void) {
  las_loop_t *loop = new_loop();
  int x;
  ASSERT_NULL(las_loop_get_data(loop));
  las_loop_set_data(loop, &x);
  ASSERT_PTR_EQ(las_loop_get_data(loop), &x);
  ASSERT_NOT_NULL(las_loop_uv(loop));
  ASSERT(strcmp(las_strerror(0), "success") == 0);
  ASSERT(strcmp(las_strerror(12345), las_strerror(LAS_EBUSY)) != 0);
  for (int e = LAS_EUV; e <= LAS_EBUSY; e++) {
    ASSERT_NOT_NULL(las_strerror(e));
    for (int f = e + 1; f <= LAS_EBUSY; f++) ASSERT(strcmp(las_strerror(e), las_strerror(f)) != 0);
  }
  double t1 = las_loop_time(loop), t2 = las_loop_time(loop);
  ASSERT(t2 >= t1);
  CLOSE_LOOP(loop);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_fifo);
  RUN_TEST(test_bad_args);
  RUN_TEST(test_one_pass);
  RUN_TEST(test_ring_wrap);
  RUN_TEST(test_stop);
  RUN_TEST(test_stop_with_pending_timer);
  RUN_TEST(test_nested_run);
  RUN_TEST(test_debug_hook);
  RUN_TEST(test_data_and_strerror);
  /* cb60e47 broke this (check_cb ran up to 16 passes per uv iteration); f6708a8 fixed it. */
  RUN_TEST(test_run_once_one_iteration);
  return 0;
}
