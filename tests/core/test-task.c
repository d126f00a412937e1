/* test-task.c - tasks driven by a C step function: schedule, wait, sleep, cancel. */
#include "task.h"

static las_loop_t *g_loop;
static ticker_t tk;

/* A scripted task: each step looks at what it was woken by, records it, and does the next
 * action of its script. */
enum { A_DONE, A_YIELD, A_YIELD_STOP, A_WAIT, A_SLEEP, A_CANCEL_SELF_THEN_WAIT, A_CANCEL_SELF_THEN_SLEEP, A_EXTERNAL, A_CANCELLED };

typedef struct {
  int script[8];
  int nsteps;
  int step_pass[8];
  int took_cancel[8];
  las_state_t waited_state[8];
  las_future_t *waited_at[8];
  las_future_t *wait_on; /* the future of A_WAIT and A_CANCEL_SELF_THEN_WAIT */
  double sleep_until;
  las_task_t *current_seen;
} script_t;

static void script_step(las_task_t *t, void *ud) {
  script_t *s = ud;
  ASSERT_PTR_EQ(las_task_data(t), s);
  ASSERT_LT(s->nsteps, 8);
  int k = s->nsteps++;
  s->step_pass[k] = tk.pass;
  s->current_seen = las_loop_current_task(g_loop);
  ASSERT(!las_task_suspended(t));
  las_future_t *w = las_task_waited(t);
  s->waited_at[k] = w;
  s->waited_state[k] = w ? las_future_state(w) : LAS_PENDING;
  s->took_cancel[k] = las_task_take_cancel(t);
  ASSERT(!las_task_take_cancel(t)); /* taking clears it */
  switch (s->script[k]) {
  case A_DONE: {
    las_value_t v = {.type = LAS_VINT, .u.i = k};
    ASSERT_OK(las_future_set_values(las_task_future(t), &v, 1));
    break;
  }
  case A_CANCELLED:
    ASSERT_OK(las_future_complete(las_task_future(t), LAS_CANCELLED));
    break;
  case A_YIELD:
    ASSERT_OK(las_task_schedule(t));
    ASSERT(las_task_suspended(t));
    break;
  case A_YIELD_STOP:
    ASSERT_OK(las_task_schedule(t));
    las_loop_stop(g_loop);
    break;
  case A_WAIT:
    ASSERT_OK(las_task_wait(t, s->wait_on));
    ASSERT(las_task_suspended(t));
    ASSERT_PTR_EQ(las_task_waited(t), s->wait_on);
    break;
  case A_SLEEP:
    ASSERT_OK(las_task_sleep_until(t, s->sleep_until));
    ASSERT(las_task_suspended(t));
    break;
  case A_CANCEL_SELF_THEN_WAIT:
    ASSERT_EQ(las_task_cancel(t), 1);
    ASSERT_OK(las_task_wait(t, s->wait_on));
    /* The pending request was delivered to the awaited future at once. */
    ASSERT_EQ(las_future_state(s->wait_on), LAS_CANCELLED);
    break;
  case A_EXTERNAL:
    ASSERT_OK(las_task_wait_external(t));
    ASSERT(las_task_suspended(t));
    ASSERT_NULL(las_task_waited(t));
    break;
  case A_CANCEL_SELF_THEN_SLEEP:
    ASSERT_EQ(las_task_cancel(t), 1);
    ASSERT_OK(las_task_sleep_until(t, s->sleep_until));
    /* The pending request turned the sleep into a bare yield: no timer was started. */
    ASSERT_EQ(las_loop_timer_count(g_loop), 0);
    break;
  }
}

static las_task_t *new_task(las_loop_t *loop, script_t *s) {
  las_task_t *t = las_task_new(loop, script_step, s);
  ASSERT_NOT_NULL(t);
  return t;
}

static void test_schedule(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t s = {.script = {A_YIELD, A_YIELD, A_DONE}};
  las_task_t *t = new_task(loop, &s);
  las_future_t *tf = las_task_future(t);
  ASSERT(las_future_is_task(tf));
  ASSERT_PTR_EQ(las_task_from_future(tf), t);
  ASSERT_EQ(las_future_state(tf), LAS_PENDING);
  ASSERT_EQ(las_loop_task_count(loop), 1);
  ASSERT(!las_task_suspended(t));
  ASSERT_EQ(s.nsteps, 0);
  ASSERT_EQ(las_loop_ready_count(loop), 0); /* creating does not schedule */
  ticker_start(&tk, loop);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_task_schedule(t)); /* already scheduled: still one step */
  ASSERT_EQ(las_loop_ready_count(loop), 2);
  ASSERT_EQ(s.nsteps, 0);
  ASSERT_NULL(las_loop_current_task(loop));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 3);
  for (int k = 0; k < 3; k++) {
    ASSERT_EQ(s.step_pass[k], k + 1); /* a bare yield costs exactly one pass */
    ASSERT_NULL(s.waited_at[k]);
  }
  ASSERT_PTR_EQ(s.current_seen, t);
  ASSERT_NULL(las_loop_current_task(loop));
  ASSERT_EQ(las_future_state(tf), LAS_DONE);
  const las_value_t *v;
  ASSERT_EQ(las_future_values(tf, &v), 1);
  ASSERT_EQ(v[0].u.i, 2);
  ASSERT_EQ(las_loop_task_count(loop), 0);
  ASSERT_EQ(las_task_schedule(t), LAS_ESTATE);
  ASSERT_EQ(las_task_cancel(t), 0);
  ASSERT_EQ(las_task_cancelling(t), 0);
  las_future_unref(tf);
  ASSERT_NULL(las_task_new(loop, NULL, NULL));
  CLOSE_LOOP(loop);
}

/* The wakeup is the awaited future's done callback: the step runs in the same pass as the
 * future's other done callbacks, not one pass later. */
typedef struct {
  int calls, pass, order;
} seen_t;
static int order_counter;
static void seen_cb(void *a, void *b) {
  (void)b;
  seen_t *p = a;
  p->calls++;
  p->pass = tk.pass;
  p->order = ++order_counter;
}

static las_future_t *to_set;
static void set_cb(void *a, void *b) {
  (void)a;
  (void)b;
  las_value_t v = {.type = LAS_VSTR, .u.s = {"hi", 2}};
  ASSERT_OK(las_future_set_values(to_set, &v, 1));
}

static void test_wait(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = to_set = las_future_new(loop);
  script_t s = {.script = {A_WAIT, A_DONE}, .wait_on = f};
  seen_t before = {0}, after = {0}, other = {0};
  order_counter = 0;
  ASSERT_OK(las_future_add_callback(f, seen_cb, &before));
  las_task_t *t = new_task(loop, &s);
  ticker_start(&tk, loop);
  ASSERT_OK(las_task_schedule(t));
  /* Pass 1: the task suspends on f. Pass 2: f completes. Pass 3: everyone wakes. */
  ASSERT_OK(las_call_soon(loop, seen_cb, &other, NULL));
  ASSERT_OK(las_call_soon(loop, set_cb, NULL, NULL));
  ASSERT_OK(las_future_add_callback(f, seen_cb, &after));
  ASSERT_EQ(las_task_wait(t, las_task_future(t)), LAS_EINVAL);
  ASSERT_EQ(las_task_wait(t, NULL), LAS_EINVAL);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.step_pass[0], 1);
  ASSERT_EQ(before.pass, 2);
  ASSERT_EQ(s.step_pass[1], 2);
  ASSERT_EQ(after.pass, 2);
  ASSERT_PTR_EQ(s.waited_at[1], f);
  ASSERT_EQ(s.waited_state[1], LAS_DONE);
  ASSERT_EQ(s.took_cancel[1], 0);
  ASSERT_EQ(before.calls, 1);
  ASSERT_EQ(after.calls, 1);
  ASSERT_LT(before.order, after.order);
  ASSERT_EQ(las_loop_task_count(loop), 0);
  /* Waiting on a future that is already done is refused (the binding resumes at once). */
  las_task_t *t2 = new_task(loop, &s);
  ASSERT_EQ(las_task_wait(t2, f), LAS_ESTATE);
  las_future_unref(las_task_future(t2));
  las_future_unref(las_task_future(t));
  las_future_unref(f);
  CLOSE_LOOP(loop);
}

static void test_sleep_until(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t s = {.script = {A_SLEEP, A_DONE}};
  s.sleep_until = las_loop_time(loop) + 0.005;
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_EQ(las_loop_run_once(loop), 1);
  ASSERT_EQ(s.nsteps, 1);
  ASSERT_EQ(las_loop_timer_count(loop), 1);
  ASSERT(las_task_suspended(t));
  ASSERT_NULL(las_task_waited(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_GE(las_loop_time(loop), s.sleep_until);
  ASSERT_NULL(s.waited_at[1]);
  ASSERT_EQ(s.took_cancel[1], 0);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_DONE);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* Cancelling a task that waits on a future cancels that future at once; the task wakes with
 * the cancelled future (its step turns that into its own cancellation). */
static void test_cancel_while_waiting(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  script_t s = {.script = {A_WAIT, A_CANCELLED}, .wait_on = f};
  las_task_t *t = new_task(loop, &s);
  seen_t done = {0};
  ASSERT_OK(las_future_add_callback(las_task_future(t), seen_cb, &done));
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 1);
  ASSERT_EQ(las_loop_task_count(loop), 1);
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_future_state(f), LAS_CANCELLED);
  ASSERT_EQ(las_task_cancelling(t), 1);
  ASSERT_EQ(s.nsteps, 1); /* nothing runs inline */
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_PTR_EQ(s.waited_at[1], f);
  ASSERT_EQ(s.waited_state[1], LAS_CANCELLED);
  ASSERT_EQ(s.took_cancel[1], 0); /* delivered through the future, not as a flag */
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_CANCELLED);
  ASSERT_EQ(done.calls, 1);
  ASSERT_EQ(las_loop_task_count(loop), 0);
  las_future_unref(las_task_future(t));
  las_future_unref(f);
  CLOSE_LOOP(loop);
}

/* Cancelling a sleeping task stops its timer and wakes it in the next pass with the flag. */
static void test_cancel_while_sleeping(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t s = {.script = {A_SLEEP, A_CANCELLED}};
  double t0 = las_loop_time(loop);
  s.sleep_until = t0 + 30;
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_EQ(las_loop_run_once(loop), 1);
  ASSERT_EQ(s.nsteps, 1);
  ASSERT_EQ(las_loop_timer_count(loop), 1);
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_loop_timer_count(loop), 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.took_cancel[1], 1);
  ASSERT_NULL(s.waited_at[1]);
  ASSERT_LT(las_loop_time(loop) - t0, 20);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_CANCELLED);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* Counting requests, uncancel, and a request made before the first step. */
static void test_cancel_counts(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t s = {.script = {A_YIELD, A_DONE}};
  las_task_t *t = new_task(loop, &s);
  ASSERT_EQ(las_task_cancelling(t), 0);
  ASSERT_EQ(las_task_uncancel(t), 0); /* never below zero */
  ASSERT_OK(las_task_schedule(t));
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_task_cancelling(t), 2);
  ASSERT_EQ(las_future_cancel(las_task_future(t)), 1); /* the same request, via the future */
  ASSERT_EQ(las_task_cancelling(t), 3);
  ASSERT_EQ(las_task_uncancel(t), 2);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_PENDING); /* only requested */
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.took_cancel[0], 1); /* the request reached the first step */
  ASSERT_EQ(s.took_cancel[1], 0); /* and only that one */
  ASSERT_EQ(las_task_cancelling(t), 2);
  ASSERT_EQ(las_task_uncancel(t), 1);
  ASSERT_EQ(las_task_uncancel(t), 0);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_DONE);
  ASSERT_EQ(las_task_cancel(t), 0);
  ASSERT_EQ(las_task_cancelling(t), 0);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* A request made while the task runs is handed to the next future it waits on; a request
 * pending when it sleeps turns the sleep into a yield. */
static void test_cancel_self(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  script_t s = {.script = {A_CANCEL_SELF_THEN_WAIT, A_CANCELLED}, .wait_on = f};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.waited_state[1], LAS_CANCELLED);
  ASSERT_EQ(s.took_cancel[1], 0);
  las_future_unref(las_task_future(t));
  las_future_unref(f);

  script_t s2 = {.script = {A_CANCEL_SELF_THEN_SLEEP, A_CANCELLED}};
  double t0 = las_loop_time(loop);
  s2.sleep_until = t0 + 30;
  t = new_task(loop, &s2);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s2.nsteps, 2);
  ASSERT_EQ(s2.took_cancel[0], 0);
  ASSERT_EQ(s2.took_cancel[1], 1);
  ASSERT_LT(las_loop_time(loop) - t0, 20);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* The awaited future is already done (its wakeup is queued) when the cancel comes: the
 * request cannot cancel it, so it waits as a flag and the waking step takes it. */
static void test_cancel_after_result(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  script_t s = {.script = {A_WAIT, A_CANCELLED}, .wait_on = f};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_future_state(f), LAS_DONE);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.waited_state[1], LAS_DONE);
  ASSERT_EQ(s.took_cancel[1], 1);
  las_future_unref(las_task_future(t));
  las_future_unref(f);
  CLOSE_LOOP(loop);
}

/* A task waiting on a task: cancelling the outer one requests cancellation of the inner
 * one, whose step completes it cancelled, which wakes the outer one. */
static void test_task_waits_task(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t si = {.script = {A_SLEEP, A_CANCELLED}};
  si.sleep_until = las_loop_time(loop) + 30;
  las_task_t *inner = new_task(loop, &si);
  script_t so = {.script = {A_WAIT, A_CANCELLED}, .wait_on = las_task_future(inner)};
  las_task_t *outer = new_task(loop, &so);
  ASSERT_OK(las_task_schedule(inner));
  ASSERT_OK(las_task_schedule(outer));
  ASSERT_EQ(las_loop_run_once(loop), 1);
  ASSERT_EQ(si.nsteps + so.nsteps, 2);
  ASSERT_EQ(las_task_cancel(outer), 1);
  ASSERT_EQ(las_task_cancelling(inner), 1);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(si.took_cancel[1], 1);
  ASSERT_EQ(so.nsteps, 2);
  ASSERT_EQ(so.waited_state[1], LAS_CANCELLED);
  ASSERT_EQ(las_loop_task_count(loop), 0);
  las_future_unref(las_task_future(outer));
  las_future_unref(las_task_future(inner));
  CLOSE_LOOP(loop);
}

/* The creator may drop a waiting task: the registration keeps it alive until it wakes. A
 * task nobody can wake again, dropped by everyone, no longer counts as live work. */
static void test_task_refs(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  script_t s = {.script = {A_WAIT, A_DONE}, .wait_on = f};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  las_future_unref(las_task_future(t));
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(las_loop_task_count(loop), 0);
  las_future_unref(f);

  script_t s2 = {.script = {A_WAIT, A_DONE}};
  s2.wait_on = las_future_new(loop);
  t = new_task(loop, &s2);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  las_future_unref(s2.wait_on); /* the future dies: the task's borrowed pointer is cleared */
  ASSERT_NULL(las_task_waited(t));
  ASSERT_EQ(las_loop_task_count(loop), 1);
  las_future_unref(las_task_future(t));
  ASSERT_EQ(las_loop_task_count(loop), 0);
  CLOSE_LOOP(loop);
}

/* las_task_waited is a borrowed pointer that "is cleared if that future dies first": after
 * the wakeup step yields, the awaited future's last reference (the queued wakeup's) goes, so
 * the task must not keep pointing at freed memory. */
static void test_waited_cleared_when_future_dies(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f = las_future_new(loop);
  script_t s = {.script = {A_WAIT, A_YIELD_STOP, A_DONE}, .wait_on = f};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_OK(las_future_set_values(f, NULL, 0));
  las_future_unref(f); /* the queued wakeup now holds the only reference */
  ASSERT_OK(las_loop_run(loop)); /* the step yields and stops the loop */
  ASSERT_EQ(s.nsteps, 2);
  /* f is freed now; the task is between a bare yield and its next step. */
  ASSERT(las_task_waited(t) != f);
  ASSERT_OK(las_loop_run(loop));
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* Withdrawing the last request with uncancel also withdraws the pending flag. */
static void test_uncancel_withdraws(void) {
  las_loop_t *loop = g_loop = new_loop();
  script_t s = {.script = {A_DONE}};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(las_task_uncancel(t), 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.took_cancel[0], 0);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* External waits: the embedding layer wakes the task itself, and is asked (through the cancel
 * hook) to cancel what the task waits for. */
static int hook_calls, hook_result;
static void *hook_data;
static int cancel_hook(las_task_t *t, void *loop_data) {
  hook_calls++;
  hook_data = loop_data;
  if (hook_result) ASSERT_OK(las_task_wake(t)); /* "cancel what it waits for", which wakes it */
  return hook_result;
}

static void test_external_wait(void) {
  las_loop_t *loop = g_loop = new_loop();
  int marker;
  las_loop_set_data(loop, &marker);
  las_loop_set_cancel_hook(loop, cancel_hook);
  hook_calls = 0;
  script_t s = {.script = {A_EXTERNAL, A_EXTERNAL, A_EXTERNAL, A_DONE}};
  las_task_t *t = new_task(loop, &s);
  ASSERT_EQ(las_task_wake(t), LAS_ESTATE); /* not waiting externally */
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop)); /* an external wait alone does not keep run going */
  ASSERT_EQ(s.nsteps, 1);
  ASSERT_EQ(las_loop_task_count(loop), 1);
  ASSERT_OK(las_task_wake(t));
  ASSERT_EQ(las_task_wake(t), LAS_ESTATE); /* already woken */
  ASSERT_EQ(s.nsteps, 1); /* the step runs in the next pass, not inline */
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 2);
  ASSERT_EQ(s.took_cancel[1], 0);
  /* The hook takes the cancellation and wakes the task: no flag is left for the step. */
  hook_result = 1;
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(hook_calls, 1);
  ASSERT_PTR_EQ(hook_data, &marker);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 3);
  ASSERT_EQ(s.took_cancel[2], 0);
  /* The hook declines: the request waits as a flag for the step woken later. */
  hook_result = 0;
  ASSERT_EQ(las_task_cancel(t), 1);
  ASSERT_EQ(hook_calls, 2);
  ASSERT_OK(las_task_wake(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(s.nsteps, 4);
  ASSERT_EQ(s.took_cancel[3], 1);
  ASSERT_EQ(las_future_state(las_task_future(t)), LAS_DONE);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

/* Debug mode names the task whose step ran in a slow callback. */
static las_task_t *slow_task;
static int slow_calls;
static void slow_hook(las_loop_t *loop, las_task_t *task, las_cb fn, double seconds) {
  (void)loop;
  (void)fn;
  (void)seconds;
  if (task) slow_task = task;
  slow_calls++;
}

static void test_debug_names_task(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_loop_set_debug(loop, 1, 0.0, slow_hook);
  script_t s = {.script = {A_DONE}};
  las_task_t *t = new_task(loop, &s);
  ASSERT_OK(las_task_schedule(t));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(slow_calls, 1);
  ASSERT_PTR_EQ(slow_task, t);
  las_future_unref(las_task_future(t));
  CLOSE_LOOP(loop);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_schedule);
  RUN_TEST(test_wait);
  RUN_TEST(test_sleep_until);
  RUN_TEST(test_cancel_while_waiting);
  RUN_TEST(test_cancel_while_sleeping);
  RUN_TEST(test_cancel_counts);
  RUN_TEST(test_cancel_self);
  RUN_TEST(test_cancel_after_result);
  RUN_TEST(test_task_waits_task);
  RUN_TEST(test_task_refs);
  RUN_TEST(test_debug_names_task);
  RUN_TEST(test_uncancel_withdraws);
  RUN_TEST(test_external_wait);
  RUN_TEST(test_waited_cleared_when_future_dies);
  return 0;
}
