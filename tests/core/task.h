/* task.h - shared helpers for the C tests of core/ (after libuv's test/task.h).
 *
 * The asserts do not use <assert.h>: the tests are built RelWithDebInfo (NDEBUG), and a
 * test whose checks vanish in a release build tests nothing. A failed check prints
 * file:line and the expression, then aborts so that sanitizers and debuggers see it. */
#ifndef LAS_TEST_TASK_H
#define LAS_TEST_TASK_H

#include "las.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(expr)                                                                \
  do {                                                                              \
    if (!(expr)) {                                                                  \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #expr);  \
      fflush(stderr);                                                               \
      abort();                                                                      \
    }                                                                               \
  } while (0)

/* Integer comparisons print both sides, which is most of what a failure report needs. */
#define ASSERT_CMP(a, op, b)                                                        \
  do {                                                                              \
    long long a_ = (long long)(a), b_ = (long long)(b);                             \
    if (!(a_ op b_)) {                                                              \
      fprintf(stderr, "%s:%d: assertion failed: %s %s %s (%lld %s %lld)\n",         \
              __FILE__, __LINE__, #a, #op, #b, a_, #op, b_);                        \
      fflush(stderr);                                                               \
      abort();                                                                      \
    }                                                                               \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_PTR_EQ(a, b) ASSERT((const void *)(a) == (const void *)(b))
#define ASSERT_NOT_NULL(a) ASSERT((a) != NULL)
#define ASSERT_NULL(a) ASSERT((a) == NULL)

/* A core call that must succeed: on failure the message names the error. */
#define ASSERT_OK(expr)                                                             \
  do {                                                                              \
    int rc_ = (expr);                                                               \
    if (rc_ != 0) {                                                                 \
      fprintf(stderr, "%s:%d: %s failed: %d (%s)\n", __FILE__, __LINE__, #expr,     \
              rc_, las_strerror(rc_));                                              \
      fflush(stderr);                                                               \
      abort();                                                                      \
    }                                                                               \
  } while (0)

/* Every test ends here: the loop must have no work left, so las_loop_close succeeds. */
#define CLOSE_LOOP(loop) ASSERT_OK(las_loop_close(loop))

/* A fresh loop on a private libuv loop, or the test stops. */
static inline las_loop_t *new_loop(void) {
  las_loop_t *loop = NULL;
  int rc = las_loop_new(&loop, NULL);
  if (rc != 0 || loop == NULL) {
    fprintf(stderr, "las_loop_new failed: %d (%s)\n", rc, las_strerror(rc));
    abort();
  }
  return loop;
}

/* The number of open file descriptors of the process (-1 where /proc is missing). A loop
 * that closed cleanly gives back its epoll and eventfd descriptors, so comparing counts
 * before and after shows whether uv_loop_close really succeeded, even in a release build. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

/* Pass numbering that does not depend on how many passes las_loop_run_once runs: a ticker
 * callback queued into an empty ready queue is the first entry of the first pass, and since
 * it requeues itself before anything else in each pass, it stays first in every later pass.
 * So while a pass runs, `pass` is its number (1-based). The ticker stops requeueing once the
 * pass it runs in holds nothing else and no timer is pending, or when `stop` is set. */
typedef struct {
  las_loop_t *loop;
  int pass;
  int stop;
} ticker_t;

static inline void ticker_cb(void *a, void *b) {
  (void)b;
  ticker_t *t = a;
  t->pass++;
  if (t->stop) return;
  if (las_loop_ready_count(t->loop) == 0 && las_loop_timer_count(t->loop) == 0) return;
  ASSERT_OK(las_call_soon(t->loop, ticker_cb, t, NULL));
}

static inline void ticker_start(ticker_t *t, las_loop_t *loop) {
  ASSERT_EQ(las_loop_ready_count(loop), 0);
  t->loop = loop;
  t->pass = 0;
  t->stop = 0;
  ASSERT_OK(las_call_soon(loop, ticker_cb, t, NULL));
}

/* Runs a named test function and says so, so that a crash points at the test that died.
 * With a test name as the program's argument (TEST_FILTER(argc, argv) in main), only that
 * test runs: handy under a debugger, or to see a test that runs after a failing one. */
static const char *test_filter_;
#define TEST_FILTER(argc, argv) (test_filter_ = (argc) > 1 ? (argv)[1] : NULL)
#define RUN_TEST(fn)                                                                \
  do {                                                                              \
    if (test_filter_ && strcmp(test_filter_, #fn) != 0) break;                      \
    fprintf(stderr, "-- %s\n", #fn);                                                \
    fn();                                                                           \
    fprintf(stderr, "ok %s\n", #fn);                                                \
  } while (0)

#endif
