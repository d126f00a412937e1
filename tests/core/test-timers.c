/* test-timers.c - the timer heap: deadline order, FIFO ties, stop, restart, scale. */
#include "task.h"

#define LOG_MAX 256
static int log_id[LOG_MAX], log_pass[LOG_MAX], nlog;
static ticker_t tk;
static las_loop_t *g_loop;

static void log_cb(void *a, void *b) {
  (void)b;
  ASSERT_LT(nlog, LOG_MAX);
  log_id[nlog] = (int)(intptr_t)a;
  log_pass[nlog] = tk.pass;
  nlog++;
}

static void test_deadline_order(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  static const double delay[] = {0.030, 0.010, 0.020, 0.0, 0.005, 0.025};
  las_timer_t *t[6];
  double t0 = las_loop_time(loop);
  for (int i = 0; i < 6; i++) {
    t[i] = las_timer_new(loop);
    ASSERT_NOT_NULL(t[i]);
    ASSERT(!las_timer_active(t[i]));
    ASSERT_OK(las_timer_start(t[i], t0 + delay[i], log_cb, (void *)(intptr_t)i, NULL));
    ASSERT(las_timer_active(t[i]));
    ASSERT(las_timer_when(t[i]) == t0 + delay[i]);
  }
  ASSERT_EQ(las_loop_timer_count(loop), 6);
  ASSERT(las_loop_alive(loop));
  ASSERT_OK(las_loop_run(loop));
  static const int want[] = {3, 4, 1, 2, 5, 0};
  ASSERT_EQ(nlog, 6);
  for (int i = 0; i < 6; i++) ASSERT_EQ(log_id[i], want[i]);
  /* A timer never fires before its deadline. */
  ASSERT_GE(las_loop_time(loop), t0 + 0.030);
  for (int i = 0; i < 6; i++) {
    ASSERT(!las_timer_active(t[i]));
    las_timer_free(t[i]);
  }
  ASSERT_EQ(las_loop_timer_count(loop), 0);
  CLOSE_LOOP(loop);
}

/* Equal deadlines fire in the order the timers were started; a restarted timer counts as
 * started at its restart. */
static void test_fifo_ties(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  las_timer_t *t[100];
  double when = las_loop_time(loop) + 0.003;
  for (int i = 0; i < 100; i++) {
    t[i] = las_timer_new(loop);
    ASSERT_OK(las_timer_start(t[i], when, log_cb, (void *)(intptr_t)i, NULL));
  }
  /* Restarting timer 10 with the same deadline moves it behind all the others. */
  ASSERT_OK(las_timer_start(t[10], when, log_cb, (void *)(intptr_t)10, NULL));
  ASSERT_EQ(las_loop_timer_count(loop), 100);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 100);
  for (int i = 0, k = 0; i < 100; i++) {
    if (i == 10) continue;
    ASSERT_EQ(log_id[k++], i);
  }
  ASSERT_EQ(log_id[99], 10);
  for (int i = 0; i < 100; i++) las_timer_free(t[i]);
  CLOSE_LOOP(loop);
}

static void test_stop(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  las_timer_free(NULL);
  las_timer_stop(NULL);
  ASSERT(!las_timer_active(NULL));
  ASSERT_EQ(las_timer_start(NULL, 0, log_cb, NULL, NULL), LAS_EINVAL);
  las_timer_t *a = las_timer_new(loop), *b = las_timer_new(loop), *c = las_timer_new(loop);
  double t0 = las_loop_time(loop);
  ASSERT_EQ(las_timer_start(a, t0, NULL, NULL, NULL), LAS_EINVAL);
  ASSERT_EQ(las_timer_start(a, 0.0 / 0.0, log_cb, NULL, NULL), LAS_EINVAL);
  ASSERT_EQ(las_loop_timer_count(loop), 0);
  ASSERT_OK(las_timer_start(a, t0 + 0.002, log_cb, (void *)1, NULL));
  ASSERT_OK(las_timer_start(b, t0 + 0.001, log_cb, (void *)2, NULL));
  ASSERT_OK(las_timer_start(c, t0 + 0.003, log_cb, (void *)3, NULL));
  las_timer_stop(b);
  ASSERT(!las_timer_active(b));
  las_timer_stop(b); /* stopping twice is fine */
  ASSERT_EQ(las_loop_timer_count(loop), 2);
  /* Freeing an active timer stops it first. */
  las_timer_free(c);
  ASSERT_EQ(las_loop_timer_count(loop), 1);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 1);
  ASSERT_EQ(log_id[0], 1);
  /* A stopped timer can be started again. */
  ASSERT_OK(las_timer_start(b, las_loop_time(loop), log_cb, (void *)4, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 2);
  ASSERT_EQ(log_id[1], 4);
  las_timer_free(a);
  las_timer_free(b);
  CLOSE_LOOP(loop);
}

/* A stopped timer never fires, even when it was already due in the pass that stops it:
 * two timers share a deadline, and the first one's callback stops (or restarts) the second.
 * Both were moved to the ready queue when the pass began, so only marking can honour the
 * stop (asyncio's TimerHandle.cancel, habit 5: "cancel by marking"). */
static las_timer_t *victim;
static void stop_victim_cb(void *a, void *b) {
  log_cb(a, b);
  las_timer_stop(victim);
}

static void restart_victim_cb(void *a, void *b) {
  log_cb(a, b);
  ASSERT_OK(las_timer_start(victim, las_loop_time(g_loop) + 0.005, log_cb, (void *)30, NULL));
}

static void test_stop_when_due_in_same_pass(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  las_timer_t *a = las_timer_new(loop);
  victim = las_timer_new(loop);
  double when = las_loop_time(loop) + 0.002;
  ASSERT_OK(las_timer_start(a, when, stop_victim_cb, (void *)1, NULL));
  ASSERT_OK(las_timer_start(victim, when, log_cb, (void *)2, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 1); /* the victim must not have fired */
  ASSERT_EQ(log_id[0], 1);

  /* Restarting a due timer from a callback of the same pass: it fires once, later. */
  nlog = 0;
  when = las_loop_time(loop) + 0.002;
  ASSERT_OK(las_timer_start(a, when, restart_victim_cb, (void *)10, NULL));
  ASSERT_OK(las_timer_start(victim, when, log_cb, (void *)20, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 2);
  ASSERT_EQ(log_id[0], 10);
  ASSERT_EQ(log_id[1], 30);
  las_timer_free(a);
  las_timer_free(victim);
  CLOSE_LOOP(loop);
}

/* Freeing a timer whose ready entry is already queued: it never fires, and its memory is
 * neither leaked nor touched after the free (ASan/LSan). */
static void free_victim_cb(void *a, void *b) {
  log_cb(a, b);
  las_timer_free(victim);
}

static void test_free_when_due_in_same_pass(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  las_timer_t *a = las_timer_new(loop);
  victim = las_timer_new(loop);
  double when = las_loop_time(loop) + 0.002;
  ASSERT_OK(las_timer_start(a, when, free_victim_cb, (void *)1, NULL));
  ASSERT_OK(las_timer_start(victim, when, log_cb, (void *)2, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 1);
  ASSERT_EQ(log_id[0], 1);
  las_timer_free(a);
  CLOSE_LOOP(loop);
}

/* Timers started from callbacks: a chain of timers, and a callback that starts a timer
 * earlier than the one the loop is sleeping for (the wake-up must be re-armed). */
static las_timer_t *chain_t;
static void chain_cb(void *a, void *b) {
  log_cb(a, b);
  intptr_t k = (intptr_t)a;
  if (k < 5) ASSERT_OK(las_timer_start(chain_t, las_loop_time(g_loop) + 0.001, chain_cb, (void *)(k + 1), NULL));
}

static void stop_loop_cb(void *a, void *b) {
  log_cb(a, b);
  las_loop_stop(g_loop);
}

static las_timer_t *early_t;
static void start_early_cb(void *a, void *b) {
  log_cb(a, b);
  ASSERT_OK(las_timer_start(early_t, las_loop_time(g_loop) + 0.005, stop_loop_cb, (void *)51, NULL));
}

static void test_start_from_callbacks(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  chain_t = las_timer_new(loop);
  ASSERT_OK(las_timer_start(chain_t, las_loop_time(loop), chain_cb, (void *)0, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 6);
  for (int i = 0; i < 6; i++) ASSERT_EQ(log_id[i], i);
  las_timer_free(chain_t);

  nlog = 0;
  early_t = las_timer_new(loop);
  las_timer_t *far = las_timer_new(loop);
  double t0 = las_loop_time(loop);
  /* The loop first sleeps for `far`; the early timer stops the loop, which must happen
   * long before `far` is due. */
  ASSERT_OK(las_timer_start(far, t0 + 30, log_cb, (void *)99, NULL));
  ASSERT_OK(las_call_soon(loop, start_early_cb, (void *)50, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 2);
  ASSERT_EQ(log_id[0], 50);
  ASSERT_EQ(log_id[1], 51);
  ASSERT(las_timer_active(far));
  ASSERT_LT(las_loop_time(loop) - t0, 20);
  las_timer_free(far);
  las_timer_free(early_t);
  CLOSE_LOOP(loop);
}

/* A timer that is already due when a callback starts it runs in the next pass, not in the
 * pass that started it; an overdue timer goes before one due "now". */
static las_timer_t *now_t, *past_t;
static void start_now_cb(void *a, void *b) {
  log_cb(a, b);
  double now = las_loop_time(g_loop);
  ASSERT_OK(las_timer_start(now_t, now, log_cb, (void *)2, NULL));
  ASSERT_OK(las_timer_start(past_t, now - 1, log_cb, (void *)3, NULL));
  ASSERT_OK(las_call_soon(g_loop, log_cb, (void *)4, NULL));
}

static void test_due_now_runs_next_pass(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  now_t = las_timer_new(loop);
  past_t = las_timer_new(loop);
  ticker_start(&tk, loop);
  ASSERT_OK(las_call_soon(loop, start_now_cb, (void *)1, NULL));
  ASSERT_OK(las_call_soon(loop, log_cb, (void *)5, NULL));
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 5);
  ASSERT_EQ(log_id[0], 1);
  ASSERT_EQ(log_pass[0], 1);
  ASSERT_EQ(log_id[1], 5);
  ASSERT_EQ(log_pass[1], 1);
  /* Pass 2: the call_soon queued in pass 1 first, then the due timers in deadline order. */
  ASSERT_EQ(log_id[2], 4);
  ASSERT_EQ(log_id[3], 3);
  ASSERT_EQ(log_id[4], 2);
  for (int i = 2; i < 5; i++) ASSERT_EQ(log_pass[i], 2);
  las_timer_free(now_t);
  las_timer_free(past_t);
  CLOSE_LOOP(loop);
}

/* A cheap deterministic generator, so that failures reproduce. */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* A million pending timers, started and stopped in a scrambled order: the heap must stay
 * usable at that size (O(log n) each). No timing assert; ctest's timeout is the bound. */
#define MANY 1000000
static void test_million_pending(void) {
  las_loop_t *loop = g_loop = new_loop();
  nlog = 0;
  las_timer_t **t = malloc(MANY * sizeof *t);
  ASSERT_NOT_NULL(t);
  double t0 = las_loop_time(loop);
  for (size_t i = 0; i < MANY; i++) {
    t[i] = las_timer_new(loop);
    ASSERT_NOT_NULL(t[i]);
    double when = t0 + 100 + (double)(rng() % 100000) * 1e-3;
    ASSERT_OK(las_timer_start(t[i], when, log_cb, (void *)(intptr_t)-1, NULL));
  }
  ASSERT_EQ(las_loop_timer_count(loop), MANY);
  /* Stop from the middle out, then the odd ones, then the rest. */
  for (size_t i = MANY / 2; i < MANY; i += 2) las_timer_stop(t[i]);
  for (size_t i = 1; i < MANY; i += 2) las_timer_stop(t[i]);
  ASSERT_EQ(las_loop_timer_count(loop), MANY / 4);
  for (size_t i = 0; i < MANY; i++) las_timer_stop(t[i]);
  ASSERT_EQ(las_loop_timer_count(loop), 0);
  for (size_t i = 0; i < MANY; i++) ASSERT(!las_timer_active(t[i]));
  /* Nothing is left to wait for, so run returns at once and nothing fired. */
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nlog, 0);
  for (size_t i = 0; i < MANY; i++) las_timer_free(t[i]);
  free(t);
  CLOSE_LOOP(loop);
}

/* About 100,000 timers firing over ~50 ms, with many ties: they must come out sorted by
 * deadline, ties in start order, each exactly once. */
#define FIRING 100000
static double fire_when[FIRING];
static int fired_order[FIRING], nfired;
static unsigned char fired_seen[FIRING];

static void fire_cb(void *a, void *b) {
  (void)b;
  int i = (int)(intptr_t)a;
  ASSERT_EQ(fired_seen[i], 0);
  fired_seen[i] = 1;
  ASSERT(las_timer_when(b) == fire_when[i]); /* b is the timer itself, still valid here */
  ASSERT(las_loop_time(g_loop) >= fire_when[i]);
  fired_order[nfired++] = i;
}

static void test_hundred_thousand_firing(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_timer_t **t = malloc(FIRING * sizeof *t);
  ASSERT_NOT_NULL(t);
  nfired = 0;
  double t0 = las_loop_time(loop) + 0.005;
  for (int i = 0; i < FIRING; i++) {
    t[i] = las_timer_new(loop);
    /* 500 distinct deadlines 0.1 ms apart: about 200 timers share each one. */
    fire_when[i] = t0 + (double)(rng() % 500) * 1e-4;
    ASSERT_OK(las_timer_start(t[i], fire_when[i], fire_cb, (void *)(intptr_t)i, t[i]));
  }
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(nfired, FIRING);
  for (int k = 1; k < FIRING; k++) {
    int p = fired_order[k - 1], c = fired_order[k];
    ASSERT(fire_when[p] < fire_when[c] || (fire_when[p] == fire_when[c] && p < c));
  }
  ASSERT_EQ(las_loop_timer_count(loop), 0);
  for (int i = 0; i < FIRING; i++) las_timer_free(t[i]);
  free(t);
  CLOSE_LOOP(loop);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_deadline_order);
  RUN_TEST(test_fifo_ties);
  RUN_TEST(test_stop);
  RUN_TEST(test_start_from_callbacks);
  RUN_TEST(test_due_now_runs_next_pass);
  RUN_TEST(test_million_pending);
  RUN_TEST(test_hundred_thousand_firing);
  RUN_TEST(test_stop_when_due_in_same_pass);
  RUN_TEST(test_free_when_due_in_same_pass);
  return 0;
}
