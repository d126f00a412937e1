/* test-wake.c - a timer that falls due while a callback holds the loop must still fire.
 * Regression: the libuv wake timer fired before the poll and did nothing, our pass only ran
 * after the poll, and with nothing else armed the poll blocked forever. */
#include "las.h"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #x); abort(); } } while (0)

static int fired;

static void on_timer(void *a, void *b) { (void)a; (void)b; fired++; }

/* Holds the loop (as a blocking callback would) until well past the timer's deadline. */
static void hog(void *a, void *b) {
  (void)b;
  las_loop_t *loop = a;
  double until = las_loop_time(loop) + 0.05;
  while (las_loop_time(loop) < until) {}
}

/* Starts the timer and then hogs the loop in the same pass, so the deadline passes before
 * libuv ever polls. */
static void start(void *a, void *b) {
  las_loop_t *loop = a;
  las_timer_t *t = b;
  CHECK(las_timer_start(t, las_loop_time(loop) + 0.01, on_timer, NULL, NULL) == 0);
  CHECK(las_call_soon(loop, hog, loop, NULL) == 0);
}

int main(void) {
  las_loop_t *loop;
  CHECK(las_loop_new(&loop, NULL) == 0);
  las_timer_t *t = las_timer_new(loop);
  CHECK(t != NULL);
  CHECK(las_call_soon(loop, start, loop, t) == 0);
  /* The loop runs until nothing is left: it must not block once the timer has fired. */
  CHECK(las_loop_run(loop) == 0);
  CHECK(fired == 1);
  /* Stopping the earliest timer disarms the wake timer armed for it: with nothing left,
   * the loop is not alive (it used to look alive, and wake, for the stopped timer). */
  CHECK(las_timer_start(t, las_loop_time(loop) + 30, on_timer, NULL, NULL) == 0);
  CHECK(las_loop_alive(loop));
  las_timer_stop(t);
  CHECK(!las_loop_alive(loop));
  las_timer_free(t);
  CHECK(las_loop_close(loop) == 0);
  printf("test-wake: ok\n");
  return 0;
}
