/* test-close.c - closing: EBUSY changes nothing, clean close, destroy, adopted uv loops. */
#include "task.h"
#include <pthread.h>
#include <stdatomic.h>

static las_loop_t *g_loop;

static int calls;
static void count_cb(void *a, void *b) {
  (void)a;
  (void)b;
  calls++;
}

static void done_step(las_task_t *t, void *ud) {
  (void)ud;
  calls++;
  ASSERT_OK(las_future_set_values(las_task_future(t), NULL, 0));
}

/* Every kind of live work makes close return LAS_EBUSY without touching it: afterwards the
 * loop still runs it, and then closes cleanly. */
static void test_busy_ready(void) {
  las_loop_t *loop = new_loop();
  calls = 0;
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT_EQ(las_loop_ready_count(loop), 1);
  ASSERT_EQ(calls, 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 1);
  CLOSE_LOOP(loop);
}

static void test_busy_timer(void) {
  las_loop_t *loop = new_loop();
  calls = 0;
  las_timer_t *t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(t, las_loop_time(loop) + 0.002, count_cb, NULL, NULL));
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT(las_timer_active(t));
  ASSERT_EQ(las_loop_timer_count(loop), 1);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 1);
  CLOSE_LOOP(loop);
  las_timer_free(t); /* an inactive timer may be freed after its loop closed */
}

static void test_busy_task(void) {
  las_loop_t *loop = new_loop();
  calls = 0;
  las_task_t *t = las_task_new(loop, done_step, NULL);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY); /* created, not even scheduled */
  ASSERT_OK(las_task_schedule(t));
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 1);
  /* The finished task still holds a reference on the loop's memory: close succeeds, and the
   * memory goes with the task's last reference (LSan checks). */
  CLOSE_LOOP(loop);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_DONE);
  las_future_unref(las_task_future(t));
}

static void test_busy_hold(void) {
  las_loop_t *loop = new_loop();
  las_loop_hold(loop);
  las_loop_hold(loop);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  las_loop_release(loop);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  las_loop_release(loop);
  las_loop_release(loop); /* unbalanced release is ignored */
  CLOSE_LOOP(loop);
}

/* Work in flight holds the loop like a hold, and is counted apart (for a shutdown that
 * waits for it and not for plain holds). */
static void test_busy_work(void) {
  las_loop_t *loop = new_loop();
  las_loop_hold(loop);
  las_loop_work_begin(loop);
  ASSERT_EQ(las_loop_work_count(loop), 1);
  las_loop_release(loop);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT(las_loop_alive(loop));
  las_loop_work_end(loop);
  las_loop_work_end(loop); /* unbalanced end is ignored */
  ASSERT_EQ(las_loop_work_count(loop), 0);
  ASSERT(!las_loop_alive(loop));
  CLOSE_LOOP(loop);
}

/* A libuv handle of the user's on the loop's private uv loop is live work too. */
static void on_uv_close(uv_handle_t *h) { (void)h; calls++; }

static void test_busy_foreign_handle(void) {
  las_loop_t *loop = new_loop();
  calls = 0;
  uv_timer_t h;
  ASSERT_EQ(uv_timer_init(las_loop_uv(loop), &h), 0);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  uv_close((uv_handle_t *)&h, on_uv_close);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 1);
  CLOSE_LOOP(loop);
}

/* A clean close gives back every descriptor: proof that uv_loop_close succeeded inside. */
static void test_clean_close_fds(void) {
  int before = count_fds();
  las_loop_t *loop = new_loop();
  las_timer_t *t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(t, las_loop_time(loop), count_cb, NULL, NULL));
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  las_timer_free(t);
  ASSERT_EQ(las_loop_close(NULL), LAS_EINVAL);
  CLOSE_LOOP(loop);
  ASSERT_EQ(count_fds(), before);
}

/* A pending libuv request (threadpool work) is live work as well: closing under it would
 * free the uv loop the worker thread is about to report to. */
static void slow_work(uv_work_t *req) {
  (void)req;
  uv_sleep(50);
}

static void after_work(uv_work_t *req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  calls++;
}

static void test_busy_request(void) {
  int before = count_fds();
  las_loop_t *loop = new_loop();
  calls = 0;
  uv_work_t req;
  ASSERT_EQ(uv_queue_work(las_loop_uv(loop), &req, slow_work, after_work), 0);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 1);
  CLOSE_LOOP(loop);
  ASSERT_EQ(count_fds(), before);
}

/* las_loop_close from inside one of the loop's own callbacks is refused whichever way the
 * loop is being run: the loop must not be freed under the pass that is running. */
static int inner_close_rc = 12345;
static void close_inside_cb(void *a, void *b) {
  (void)a;
  (void)b;
  inner_close_rc = las_loop_close(g_loop);
}

static void test_close_inside_callback(void) {
  las_loop_t *loop = g_loop = new_loop();
  inner_close_rc = 12345;
  ASSERT_OK(las_call_soon(loop, close_inside_cb, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(inner_close_rc, LAS_ERUNNING);

  inner_close_rc = 12345;
  ASSERT_OK(las_call_soon(loop, close_inside_cb, NULL, NULL));
  (void)las_loop_run_once(loop);
  ASSERT_NE(inner_close_rc, 0);
  ASSERT_NE(inner_close_rc, 12345);
  CLOSE_LOOP(loop);
}

/* A future may outlive its loop: completing it afterwards is harmless and runs nothing. */
static void test_future_outlives_loop(void) {
  las_loop_t *loop = new_loop();
  calls = 0;
  las_future_t *f = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(f, count_cb, NULL));
  CLOSE_LOOP(loop); /* a plain future is not live work */
  ASSERT_PTR_EQ(las_future_loop(f), loop);
  las_value_t v = {.type = LAS_VSTR, .u.s = {"x", 1}};
  int rc = las_future_set_values(f, &v, 1);
  ASSERT(rc == 0 || rc == LAS_ECLOSED);
  ASSERT_EQ(calls, 0);
  las_future_unref(f); /* frees the loop's memory too */
}

/* Destroy drops everything unrun: ready callbacks, done callbacks, timers, tasks in every
 * state, holds; queued posts are told LAS_ECANCELED exactly once. The leftover objects are
 * then released by their owners, and LSan checks that nothing leaks. */
static int post_ok, post_cancelled;
static void post_cb(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  int *slot = arg;
  ASSERT_EQ(*slot, 0);
  *slot = status == 0 ? 1 : 2;
  if (status == 0) post_ok++;
  else if (status == LAS_ECANCELED) post_cancelled++;
  else ASSERT(0 && "unexpected post status");
}

static void wait_step(las_task_t *t, void *ud) {
  calls++;
  las_future_t *f = ud;
  if (f) ASSERT_OK(las_task_wait(t, f));
  else ASSERT_OK(las_task_sleep_until(t, las_loop_time(las_future_loop(las_task_future(t))) + 30));
}

static void test_destroy_live_work(void) {
  int before = count_fds();
  las_loop_t *loop = new_loop();
  calls = post_ok = post_cancelled = 0;
  las_future_t *waited = las_future_new(loop);
  las_task_t *waiter = las_task_new(loop, wait_step, waited);
  las_task_t *sleeper = las_task_new(loop, wait_step, NULL);
  ASSERT_OK(las_task_schedule(waiter));
  ASSERT_OK(las_task_schedule(sleeper));
  ASSERT_EQ(las_loop_run_once(loop), 1); /* one pass: both steps run and suspend */
  ASSERT_EQ(calls, 2);
  calls = 0;
  /* Now: one task waits on a future, one sleeps on a timer. Add more of everything. */
  las_task_t *fresh = las_task_new(loop, wait_step, NULL); /* never scheduled */
  las_task_t *queued = las_task_new(loop, wait_step, NULL);
  ASSERT_OK(las_task_schedule(queued));
  las_future_t *done = las_future_new(loop);
  ASSERT_OK(las_future_add_callback(done, count_cb, NULL));
  las_value_t v = {.type = LAS_VSTR, .u.s = {"abc", 3}};
  ASSERT_OK(las_future_set_values(done, &v, 1));
  las_future_unref(done); /* only the queued done callback holds it now */
  las_future_t *held = las_future_new(loop);
  las_future_hold_loop(held);
  las_timer_t *t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(t, las_loop_time(loop) + 30, count_cb, NULL, NULL));
  las_timer_t *due = las_timer_new(loop);
  ASSERT_OK(las_timer_start(due, las_loop_time(loop) - 1, count_cb, NULL, NULL));
  for (int i = 0; i < 10; i++) ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  static int slots[100];
  memset(slots, 0, sizeof slots);
  for (int i = 0; i < 100; i++) ASSERT_OK(las_loop_post(loop, post_cb, &slots[i]));
  las_loop_hold(loop);
  ASSERT_EQ(las_loop_close(loop), LAS_EBUSY);

  las_loop_destroy(loop);
  ASSERT_EQ(calls, 0);
  ASSERT_EQ(post_ok, 0);
  ASSERT_EQ(post_cancelled, 100);
  for (int i = 0; i < 100; i++) ASSERT_EQ(slots[i], 2);
  /* The owners let go of what they own; the loop's memory goes with the last of it. */
  ASSERT(!las_timer_active(t));
  las_timer_free(t);
  las_timer_free(due);
  las_future_unref(held);
  las_future_unref(las_task_future(fresh));
  las_future_unref(las_task_future(queued));
  las_future_unref(las_task_future(sleeper));
  las_future_unref(las_task_future(waiter));
  las_future_unref(waited);
  ASSERT_EQ(calls, 0);
  ASSERT_EQ(count_fds(), before);
  las_loop_destroy(NULL);
}

/* Destroy of an idle loop, and of a loop whose objects were released first. */
static void test_destroy_simple(void) {
  int before = count_fds();
  las_loop_t *loop = new_loop();
  las_loop_destroy(loop);
  loop = new_loop();
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  las_loop_destroy(loop);
  ASSERT_EQ(count_fds(), before);
}

/* An adopted uv loop: the host drives it with uv_run, lasync's work runs, and after
 * las_loop_close the host's own uv_loop_close succeeds (no handle of lasync's is left). */
static void test_adopted(void) {
  uv_loop_t uv;
  ASSERT_EQ(uv_loop_init(&uv), 0);
  las_loop_t *loop = NULL;
  ASSERT_OK(las_loop_new(&loop, &uv));
  g_loop = loop;
  ASSERT_PTR_EQ(las_loop_uv(loop), &uv);
  calls = 0;
  las_timer_t *t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(t, las_loop_time(loop) + 0.003, count_cb, NULL, NULL));
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  /* The host's loop drives lasync on its own and returns once lasync has nothing left. */
  ASSERT_EQ(uv_run(&uv, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(calls, 2);
  /* las_loop_run works on the adopted loop too. */
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(calls, 3);
  /* The host has a handle of its own: it is not lasync's business to wait for it. */
  uv_idle_t idle;
  ASSERT_EQ(uv_idle_init(&uv, &idle), 0);
  las_timer_free(t);
  CLOSE_LOOP(loop);
  uv_close((uv_handle_t *)&idle, NULL);
  ASSERT_EQ(uv_run(&uv, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(uv_loop_close(&uv), 0);

  /* Destroy on an adopted loop leaves it closable as well. */
  ASSERT_EQ(uv_loop_init(&uv), 0);
  ASSERT_OK(las_loop_new(&loop, &uv));
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  las_loop_destroy(loop);
  ASSERT_EQ(uv_run(&uv, UV_RUN_NOWAIT), 0);  /* the close callbacks of lasync's handles */
  ASSERT_EQ(uv_loop_close(&uv), 0);
  ASSERT_EQ(calls, 3);
}

/* The host may close lasync from one of its own callbacks, inside its uv_run: lasync must
 * not run the host's loop there. The host's other handles stay untouched, and its uv_run
 * finishes closing lasync's handles (ASan checks the memory goes with them). */
static int host_ticks;
static void host_close_cb(uv_timer_t *t) {
  las_loop_t *loop = t->data;
  int ticks = host_ticks;
  ASSERT_OK(las_loop_close(loop));
  ASSERT_EQ(host_ticks, ticks); /* the host's idle handle did not run inside the close */
  uv_close((uv_handle_t *)t, NULL);
}
static void host_idle_cb(uv_idle_t *i) {
  (void)i;
  host_ticks++;
}
static void test_adopted_close_inside_host_callback(void) {
  uv_loop_t uv;
  ASSERT_EQ(uv_loop_init(&uv), 0);
  las_loop_t *loop = NULL;
  ASSERT_OK(las_loop_new(&loop, &uv));
  calls = 0;
  ASSERT_OK(las_call_soon(loop, count_cb, NULL, NULL));
  uv_timer_t timer;
  uv_timer_init(&uv, &timer);
  timer.data = loop;
  uv_timer_start(&timer, host_close_cb, 2, 0);
  uv_idle_t idle;
  uv_idle_init(&uv, &idle);
  host_ticks = 0;
  uv_idle_start(&idle, host_idle_cb);
  uv_unref((uv_handle_t *)&idle);
  ASSERT_EQ(uv_run(&uv, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(calls, 1);
  uv_close((uv_handle_t *)&idle, NULL);
  ASSERT_EQ(uv_run(&uv, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(uv_loop_close(&uv), 0);
}

/* A host posts callbacks from its threads (las_loop_post) and one of them, running inside
 * the host's uv_run, closes lasync. Either the close is refused there (as inside any other
 * lasync callback) or the posts still queued behind it are told LAS_ECANCELED: a post is
 * never told it was delivered (status 0) on a loop that is already closed. */
static int post_close_rc = 12345, second_post_status = 12345;
static void post_closing_cb(las_loop_t *loop, void *arg, int status) {
  (void)arg;
  if (status == 0) post_close_rc = las_loop_close(loop);
}
static void post_second_cb(las_loop_t *loop, void *arg, int status) {
  (void)arg;
  second_post_status = status;
  if (status == 0) las_loop_release(loop);
}
static void test_adopted_close_inside_post(void) {
  uv_loop_t uv;
  ASSERT_EQ(uv_loop_init(&uv), 0);
  las_loop_t *loop = NULL;
  ASSERT_OK(las_loop_new(&loop, &uv));
  las_loop_hold(loop); /* the host's loop runs only while something is alive */
  ASSERT_OK(las_loop_post(loop, post_closing_cb, NULL));
  ASSERT_OK(las_loop_post(loop, post_second_cb, NULL));
  ASSERT_EQ(uv_run(&uv, UV_RUN_NOWAIT), 0);
  ASSERT(post_close_rc == LAS_ERUNNING || second_post_status == LAS_ECANCELED);
  if (post_close_rc == LAS_ERUNNING) ASSERT_OK(las_loop_close(loop));
  ASSERT_EQ(uv_run(&uv, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(uv_loop_close(&uv), 0);
}

/* Tasks waiting on futures that worker threads hold, and the loop destroyed under them:
 * the workers' posts are refused and each drops its future, and with it the last reference
 * of a pending task, on its own thread, all at once (TSan runs this file). */
#define NWORK 4
static atomic_int go_workers;
static void waiting_step(las_task_t *t, void *ud) { ASSERT_OK(las_task_wait(t, ud)); }
static void *late_worker(void *arg) {
  las_future_t *f = arg;
  while (!atomic_load(&go_workers)) {}
  las_value_t v = {.type = LAS_VINT, .u.i = 1};
  if (las_future_post_values(f, &v, 1) != 0) las_future_unref(f);
  return NULL;
}
static void test_destroy_under_waiting_tasks(void) {
  las_loop_t *loop = new_loop();
  las_future_t *f[NWORK];
  pthread_t th[NWORK];
  atomic_store(&go_workers, 0);
  for (int i = 0; i < NWORK; i++) {
    f[i] = las_future_new(loop);
    las_task_t *t = las_task_new(loop, waiting_step, f[i]);
    ASSERT_OK(las_task_schedule(t));
    las_future_unref(las_task_future(t)); /* the future's waiter record keeps it */
  }
  (void)las_loop_run_once(loop);
  ASSERT_EQ(las_loop_task_count(loop), NWORK);
  las_loop_ref(loop); /* the workers may post after the destroy */
  for (int i = 0; i < NWORK; i++) ASSERT_EQ(pthread_create(&th[i], NULL, late_worker, f[i]), 0);
  las_loop_destroy(loop);
  atomic_store(&go_workers, 1);
  for (int i = 0; i < NWORK; i++) pthread_join(th[i], NULL);
  las_loop_unref(loop);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_busy_ready);
  RUN_TEST(test_busy_timer);
  RUN_TEST(test_busy_task);
  RUN_TEST(test_busy_hold);
  RUN_TEST(test_busy_work);
  RUN_TEST(test_busy_foreign_handle);
  RUN_TEST(test_clean_close_fds);
  RUN_TEST(test_future_outlives_loop);
  RUN_TEST(test_destroy_live_work);
  RUN_TEST(test_destroy_simple);
  RUN_TEST(test_adopted);
  RUN_TEST(test_adopted_close_inside_host_callback);
  RUN_TEST(test_adopted_close_inside_post);
  RUN_TEST(test_destroy_under_waiting_tasks);
  /* Last, because they fail: see the comments on each. */
  RUN_TEST(test_busy_request);
  RUN_TEST(test_close_inside_callback);
  return 0;
}
