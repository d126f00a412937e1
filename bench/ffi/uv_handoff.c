/* uv_handoff.c - the ceiling for bench/ffi/run.sh's completion throughput: 4 threads hand
 * N completions each to a libuv loop thread through a mutex-protected queue and a
 * uv_async_t, the same shape as las_loop_post, with no Lua at all. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct item { struct item *next; int v; } item;

static uv_async_t async;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static item *head, *tail;
static long done, total;

static void drain(uv_async_t *h) {
  pthread_mutex_lock(&mu);
  item *it = head;
  head = tail = NULL;
  pthread_mutex_unlock(&mu);
  while (it) {
    item *n = it->next;
    done++;
    free(it);
    it = n;
  }
  if (done == total) uv_close((uv_handle_t *)h, NULL);
}

static void *producer(void *arg) {
  long n = (long)arg;
  for (long i = 0; i < n; i++) {
    item *it = malloc(sizeof *it);
    it->next = NULL;
    it->v = (int)i;
    pthread_mutex_lock(&mu);
    if (tail) tail->next = it; else head = it;
    tail = it;
    pthread_mutex_unlock(&mu);
    uv_async_send(&async);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long per = argc > 1 ? atol(argv[1]) : 250000;
  int nthreads = 4;
  total = per * nthreads;
  uv_loop_t *loop = uv_default_loop();
  uv_async_init(loop, &async, drain);
  pthread_t t[4];
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < nthreads; i++) pthread_create(&t[i], NULL, producer, (void *)per);
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
  printf("%.0f\n", (double)total / ((double)(t1 - t0) / 1e9));
  return 0;
}
