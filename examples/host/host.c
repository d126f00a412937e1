/* host.c - a small host application that embeds lasync: a job runner.
 *
 * The host owns a pool of worker threads. Scripts call jobs.submit(n), which creates a C
 * future, queues the job and returns the future; a worker computes the job (the sum of the
 * first n squares, slowly, as real work would be) and resolves the future from its own
 * thread with las_future_post_values. The script awaits the futures like any other.
 *
 *   usage: lasync-host script.lua [workers]
 */
#include "lasync.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct job {
  struct job *next;
  las_future_t *fut; /* the reference the worker will hand to las_future_post_values */
  long long n;
} job;

/* The job queue: a mutex and a condition variable, nothing clever. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *head, *tail;
  int stopping;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0};

/* A worker runs jobs until the host stops; it never touches Lua. */
static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&q.mu);
    while (!q.head && !q.stopping) pthread_cond_wait(&q.cv, &q.mu);
    job *j = q.head;
    if (j) {
      q.head = j->next;
      if (!q.head) q.tail = NULL;
    }
    pthread_mutex_unlock(&q.mu);
    if (!j) return NULL;
    long long sum = 0;
    for (long long i = 1; i <= j->n; i++) sum += i * i;
    struct timespec pause = {0, 2000000}; /* 2 ms: the job "takes time" */
    nanosleep(&pause, NULL);
    las_value_t v[2] = {{.type = LAS_VINT, .u.i = j->n}, {.type = LAS_VINT, .u.i = sum}};
    if (las_future_post_values(j->fut, v, 2) != 0) las_future_unref(j->fut); /* loop gone */
    free(j);
  }
}

/* jobs.submit(n) -> Future resolving to (n, sum of squares up to n). Must be called inside
 * lasync.run, on the loop thread. */
static int l_submit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 0) return luaL_error(L, "jobs.submit: n must be >= 0");
  las_loop_t *loop = lasync_getloop(L);
  if (!loop) return luaL_error(L, "jobs.submit: no loop is running (call it inside lasync.run)");
  job *j = malloc(sizeof *j);
  las_future_t *f = j ? las_future_new(loop) : NULL;
  if (!f) {
    free(j);
    return luaL_error(L, "jobs.submit: out of memory");
  }
  las_future_hold_loop(f); /* lasync.run must not return while a worker owes a result */
  lasync_pushfuture(L, f); /* the Lua object takes its own reference */
  j->fut = f;              /* ours goes to the worker */
  j->n = n;
  j->next = NULL;
  pthread_mutex_lock(&q.mu);
  if (q.tail) q.tail->next = j;
  else q.head = j;
  q.tail = j;
  pthread_cond_signal(&q.cv);
  pthread_mutex_unlock(&q.mu);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [workers]\n", argv[0]);
    return 2;
  }
  int nworkers = argc > 2 ? atoi(argv[2]) : 4;
  if (nworkers < 1 || nworkers > 64) nworkers = 4;
  pthread_t th[64];
  for (int i = 0; i < nworkers; i++) pthread_create(&th[i], NULL, worker, NULL);

  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  /* lasync is opened by the host: the script needs no package.cpath set-up. This host
   * leaves lasync.ffi out, as a host running untrusted scripts would. */
  luaL_requiref(L, "lasync", lasync_open, 0);
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_submit);
  lua_setfield(L, -2, "submit");
  lua_setglobal(L, "jobs");
  int status = 0;
  if (luaL_dofile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    status = 1;
  }
  lua_close(L);

  pthread_mutex_lock(&q.mu);
  q.stopping = 1;
  pthread_cond_broadcast(&q.cv);
  pthread_mutex_unlock(&q.mu);
  for (int i = 0; i < nworkers; i++) pthread_join(th[i], NULL);
  return status;
}
