/* test-threads.c - posts from other threads: exactly once, FIFO per producer, closing. */
#include "task.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

static las_loop_t *g_loop;

/* ------------------------------------------------------- many producers, all delivered */

/* Eight producers post 100,000 completions each while the loop runs: three in four with
 * las_loop_post, one in four by completing a future with las_future_post_values. Each
 * completion has a slot; the loop thread checks that every slot is hit exactly once and
 * that each producer's completions of each kind arrive in the order they were posted. */
#define NPROD 8
#define PER 100000
#define FUT_EVERY 4
#define NFUT (PER / FUT_EVERY)

typedef struct {
  int id;
  las_future_t **futs; /* created on the loop thread, completed by the producer */
  int last_post, last_fut; /* loop thread: the last sequence numbers seen */
  int nposts, nfuts;
} producer_t;

static producer_t prods[NPROD];
static unsigned char delivered[NPROD * PER];
static int delivered_total;

static void deliver(int id, int seq) {
  unsigned char *slot = &delivered[id * PER + seq];
  ASSERT_EQ(*slot, 0);
  *slot = 1;
  if (++delivered_total == NPROD * PER) las_loop_release(g_loop);
}

static void post_cb(las_loop_t *loop, void *arg, int status) {
  ASSERT_PTR_EQ(loop, g_loop);
  ASSERT_EQ(status, 0);
  ptrdiff_t k = (unsigned char *)arg - delivered;
  int id = (int)(k / PER), seq = (int)(k % PER);
  producer_t *p = &prods[id];
  ASSERT_GT(seq, p->last_post);
  p->last_post = seq;
  p->nposts++;
  deliver(id, seq);
}

static void fut_cb(void *a, void *b) {
  producer_t *p = a;
  las_future_t *f = b;
  ASSERT_EQ(las_future_state(f), LAS_DONE);
  const las_value_t *v;
  ASSERT_EQ(las_future_values(f, &v), 2);
  ASSERT_EQ(v[0].type, LAS_VINT);
  int seq = (int)v[0].u.i;
  char want[32];
  snprintf(want, sizeof want, "p%d:%d", p->id, seq);
  ASSERT_EQ(v[1].type, LAS_VSTR);
  ASSERT_EQ(v[1].u.s.len, strlen(want));
  ASSERT(strcmp(v[1].u.s.ptr, want) == 0);
  ASSERT_GT(seq, p->last_fut);
  p->last_fut = seq;
  p->nfuts++;
  deliver(p->id, seq);
}

static void *producer_main(void *arg) {
  producer_t *p = arg;
  char buf[32];
  for (int seq = 0; seq < PER; seq++) {
    if (seq % FUT_EVERY == FUT_EVERY - 1) {
      /* The string lives in a buffer reused at once: the post must have copied it. */
      int n = snprintf(buf, sizeof buf, "p%d:%d", p->id, seq);
      las_value_t v[2] = {{.type = LAS_VINT, .u.i = seq}, {.type = LAS_VSTR, .u.s = {buf, (size_t)n}}};
      ASSERT_OK(las_future_post_values(p->futs[seq / FUT_EVERY], v, 2));
      memset(buf, '#', sizeof buf);
    } else {
      ASSERT_OK(las_loop_post(g_loop, post_cb, &delivered[p->id * PER + seq]));
    }
  }
  return NULL;
}

static void test_many_producers(void) {
  las_loop_t *loop = g_loop = new_loop();
  memset(delivered, 0, sizeof delivered);
  delivered_total = 0;
  for (int id = 0; id < NPROD; id++) {
    producer_t *p = &prods[id];
    *p = (producer_t){.id = id, .last_post = -1, .last_fut = -1};
    p->futs = malloc(NFUT * sizeof *p->futs);
    ASSERT_NOT_NULL(p->futs);
    for (int j = 0; j < NFUT; j++) {
      /* The creator's reference goes to the producer; the post consumes it. */
      p->futs[j] = las_future_new(loop);
      ASSERT_NOT_NULL(p->futs[j]);
      ASSERT_OK(las_future_add_callback(p->futs[j], fut_cb, p));
    }
  }
  /* Nothing but the posts keeps the loop running: hold it until the last one arrives. */
  las_loop_hold(loop);
  pthread_t th[NPROD];
  for (int id = 0; id < NPROD; id++) ASSERT_EQ(pthread_create(&th[id], NULL, producer_main, &prods[id]), 0);
  ASSERT_OK(las_loop_run(loop));
  for (int id = 0; id < NPROD; id++) ASSERT_EQ(pthread_join(th[id], NULL), 0);
  ASSERT_EQ(delivered_total, NPROD * PER);
  for (int id = 0; id < NPROD; id++) {
    ASSERT_EQ(prods[id].nposts, PER - NFUT);
    ASSERT_EQ(prods[id].nfuts, NFUT);
    free(prods[id].futs);
  }
  for (int k = 0; k < NPROD * PER; k++) ASSERT_EQ(delivered[k], 1);
  CLOSE_LOOP(loop);
}

/* ------------------------------------------------------------- posting after the close */

static int never_calls;
static void never_cb(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
  never_calls++;
}

typedef struct {
  las_loop_t *loop;
  las_future_t *f;
  int post_rc, fut_rc, err_rc, cancel_rc;
} late_t;

static void *late_main(void *arg) {
  late_t *l = arg;
  las_value_t v = {.type = LAS_VSTR, .u.s = {"late", 4}};
  l->post_rc = las_loop_post(l->loop, never_cb, NULL);
  l->fut_rc = las_future_post_values(l->f, &v, 1);
  l->err_rc = las_future_post_error(l->f, "late");
  l->cancel_rc = las_future_post_cancel(l->f);
  /* A failed post keeps the reference: the producer drops it (any thread, once closed). */
  las_future_unref(l->f);
  las_loop_unref(l->loop);
  return NULL;
}

static void test_post_after_close(void) {
  las_loop_t *loop = g_loop = new_loop();
  never_calls = 0;
  late_t l = {.loop = loop};
  las_loop_ref(loop); /* the producer's reference keeps the memory valid after close */
  l.f = las_future_new(loop);
  CLOSE_LOOP(loop);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, late_main, &l), 0);
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT_EQ(l.post_rc, LAS_ECLOSED);
  ASSERT_EQ(l.fut_rc, LAS_ECLOSED);
  ASSERT_EQ(l.err_rc, LAS_ECLOSED);
  ASSERT_EQ(l.cancel_rc, LAS_ECLOSED);
  ASSERT_EQ(never_calls, 0);
  ASSERT_EQ(las_loop_post(NULL, never_cb, NULL), LAS_EINVAL);
}

/* --------------------------------------------------- error and cancel from a thread */

static las_state_t seen_state[2];
static char seen_msg[16];
static int seen_calls;
static void state_cb(void *a, void *b) {
  int i = (int)(intptr_t)a;
  seen_state[i] = las_future_state(b);
  if (i == 0) snprintf(seen_msg, sizeof seen_msg, "%s", las_future_error_message(b));
  if (++seen_calls == 2) las_loop_release(g_loop);
}

static void *err_cancel_main(void *arg) {
  las_future_t **f = arg;
  char msg[] = "bad thing";
  ASSERT_OK(las_future_post_error(f[0], msg));
  msg[0] = 'X';
  ASSERT_OK(las_future_post_cancel(f[1]));
  return NULL;
}

static void test_post_error_cancel(void) {
  las_loop_t *loop = g_loop = new_loop();
  las_future_t *f[2] = {las_future_new(loop), las_future_new(loop)};
  seen_calls = 0;
  for (int i = 0; i < 2; i++) ASSERT_OK(las_future_add_callback(f[i], state_cb, (void *)(intptr_t)i));
  las_loop_hold(loop);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, err_cancel_main, f), 0);
  ASSERT_OK(las_loop_run(loop));
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT_EQ(seen_calls, 2);
  ASSERT_EQ(seen_state[0], LAS_FAILED);
  ASSERT(strcmp(seen_msg, "bad thing") == 0);
  ASSERT_EQ(seen_state[1], LAS_CANCELLED);
  CLOSE_LOOP(loop);
}

/* ------------------------------------------------- producers racing las_loop_destroy */

/* Four producers post as fast as they can while the loop runs; the loop thread destroys the
 * loop in the middle. Every accepted post is then told exactly once, delivered (status 0) or
 * cancelled (LAS_ECANCELED), delivered ones first; every refused post is never called. */
#define RPROD 4
#define RCAP 200000

typedef struct {
  int id;
  las_loop_t *loop;
  unsigned char *slots; /* 0 untold, 1 delivered, 2 cancelled */
  int accepted;
} racer_t;

static racer_t racers[RPROD];
static atomic_int destroyed;
static int race_delivered;

static void race_cb(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  unsigned char *slot = arg;
  ASSERT_EQ(*slot, 0);
  ASSERT(status == 0 || status == LAS_ECANCELED);
  *slot = status == 0 ? 1 : 2;
  if (status == 0 && ++race_delivered == 20000) las_loop_stop(g_loop);
}

static void *racer_main(void *arg) {
  racer_t *r = arg;
  int i = 0;
  for (; i < RCAP; i++) {
    int rc = las_loop_post(r->loop, race_cb, &r->slots[i]);
    if (rc == LAS_ECLOSED) break;
    ASSERT_OK(rc);
    r->accepted++;
  }
  if (i == RCAP) {
    while (!atomic_load(&destroyed)) sched_yield();
    ASSERT_EQ(las_loop_post(r->loop, race_cb, &r->slots[0]), LAS_ECLOSED);
  }
  las_loop_unref(r->loop);
  return NULL;
}

static void test_destroy_races_producers(void) {
  las_loop_t *loop = g_loop = new_loop();
  atomic_store(&destroyed, 0);
  race_delivered = 0;
  pthread_t th[RPROD];
  for (int id = 0; id < RPROD; id++) {
    racers[id] = (racer_t){.id = id, .loop = loop, .slots = calloc(RCAP, 1)};
    ASSERT_NOT_NULL(racers[id].slots);
    las_loop_ref(loop);
  }
  las_loop_hold(loop);
  for (int id = 0; id < RPROD; id++) ASSERT_EQ(pthread_create(&th[id], NULL, racer_main, &racers[id]), 0);
  ASSERT_OK(las_loop_run(loop));
  las_loop_destroy(loop);
  atomic_store(&destroyed, 1);
  for (int id = 0; id < RPROD; id++) ASSERT_EQ(pthread_join(th[id], NULL), 0);
  for (int id = 0; id < RPROD; id++) {
    racer_t *r = &racers[id];
    int seen_cancel = 0;
    for (int i = 0; i < RCAP; i++) {
      if (i >= r->accepted) {
        ASSERT_EQ(r->slots[i], 0);
        continue;
      }
      ASSERT(r->slots[i] == 1 || r->slots[i] == 2);
      if (r->slots[i] == 2) seen_cancel = 1;
      else ASSERT(!seen_cancel); /* FIFO: nothing is delivered after a cancelled post */
    }
    free(r->slots);
  }
  ASSERT_GE(race_delivered, 20000);
}

/* The same race with futures that hold the loop, completed from the producers: a producer
 * whose post is refused drops its reference on its own thread ("any thread once the loop is
 * closed"), which must not touch the loop's state concurrently with the destroy (TSan). */
#define FPROD 4
#define FPER 20000

typedef struct {
  las_future_t **futs;
  int refused;
} fracer_t;

static fracer_t fracers[FPROD];
static int fut_done;

static void fut_done_cb(void *a, void *b) {
  (void)a;
  (void)b;
  if (++fut_done == 2000) las_loop_stop(g_loop);
}

static void *fracer_main(void *arg) {
  fracer_t *r = arg;
  las_value_t v = {.type = LAS_VINT, .u.i = 1};
  for (int i = 0; i < FPER; i++) {
    int rc = las_future_post_values(r->futs[i], &v, 1);
    if (rc == LAS_ECLOSED) {
      r->refused++;
      las_future_unref(r->futs[i]);
    } else {
      ASSERT_OK(rc);
    }
  }
  return NULL;
}

static void test_destroy_races_future_posts(void) {
  las_loop_t *loop = g_loop = new_loop();
  fut_done = 0;
  pthread_t th[FPROD];
  for (int id = 0; id < FPROD; id++) {
    fracers[id].refused = 0;
    fracers[id].futs = malloc(FPER * sizeof *fracers[id].futs);
    for (int i = 0; i < FPER; i++) {
      las_future_t *f = fracers[id].futs[i] = las_future_new(loop);
      ASSERT_OK(las_future_add_callback(f, fut_done_cb, NULL));
      las_future_hold_loop(f);
    }
  }
  for (int id = 0; id < FPROD; id++) ASSERT_EQ(pthread_create(&th[id], NULL, fracer_main, &fracers[id]), 0);
  ASSERT_OK(las_loop_run(loop));
  las_loop_destroy(loop);
  for (int id = 0; id < FPROD; id++) {
    ASSERT_EQ(pthread_join(th[id], NULL), 0);
    free(fracers[id].futs);
  }
  ASSERT_GE(fut_done, 2000);
}

int main(int argc, char **argv) {
  TEST_FILTER(argc, argv);
  RUN_TEST(test_many_producers);
  RUN_TEST(test_post_after_close);
  RUN_TEST(test_post_error_cancel);
  RUN_TEST(test_destroy_races_producers);
  RUN_TEST(test_destroy_races_future_posts);
  return 0;
}
