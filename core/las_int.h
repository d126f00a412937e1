/* las_int.h - shared internals of core/ (not installed). */
#ifndef LAS_INT_H
#define LAS_INT_H

#include "las.h"
#include <stdatomic.h>
#include <stdbool.h>

/* Ready-queue entry flags: which words the entry owns a future reference on. */
#define LAS__REF_A 1u
#define LAS__REF_B 2u

typedef struct {
  las_cb fn;
  void *a;
  void *b;
  unsigned flags;
} las__entry_t;

/* A growable power-of-two ring; a pass takes `count` as it was when the pass began. */
typedef struct {
  las__entry_t *buf;
  size_t head, count, mask;
} las__ring_t;

struct las_timer_s {
  las_loop_t *loop;
  double when;
  uint64_t seq;
  size_t idx; /* position in the heap, or LAS__NOIDX */
  las_cb fn;
  void *a, *b;
  unsigned flags;
  /* Public timers (las_timer_new) are cancelled by marking: a due timer's ready entry
   * carries the generation it was queued with, and a stop bumps it. Memory freed while an
   * entry is queued waits for that entry (zombie). */
  bool pub, zombie;
  unsigned gen;
  int queued;
};
#define LAS__NOIDX ((size_t)-1)

typedef struct las__post_s {
  struct las__post_s *next;
  las_post_cb cb;
  void *arg;
} las__post_t;

enum { LAS__OPEN = 0, LAS__CLOSED };

struct las_loop_s {
  uv_loop_t *uv;
  uv_loop_t own_uv;
  bool owns_uv;
  int state;
  atomic_int refs;
  bool running, stopping, in_pass, idle_on, one_pass;
  bool in_post; /* running the callbacks of las_loop_post */
  bool released; /* the creator's reference was dropped (by close or destroy) */
  /* libuv handles: check runs one pass per iteration, idle keeps poll from blocking while
   * callbacks are ready, wake sleeps until the earliest timer, async carries posts. */
  uv_check_t check;
  uv_idle_t idle;
  uv_timer_t wake;
  uv_async_t async;
  int handles_open;
  las__ring_t ready;
  las_timer_t **heap;
  size_t nheap, heapcap;
  uint64_t timer_seq;
  double armed; /* deadline the wake timer is set for, or NaN */
  size_t ntasks;
  int holds;
  size_t works; /* the holds that are work in flight (las_loop_work_begin) */
  las_task_t *current;
  las_task_t *stepped; /* debug mode: the task whose step ran in the current callback */
  /* Cross-thread posts: a mutex-protected FIFO; `closed` is read and written under mu. */
  uv_mutex_t mu;
  las__post_t *phead, *ptail;
  bool pclosed;
  /* Debug mode. */
  bool debug;
  double slow;
  las_slow_cb slow_hook;
  las_cancel_hook cancel_hook;
  void *data;
};

struct las_future_s {
  las_loop_t *loop;
  atomic_int refs;
  unsigned char state;
  bool is_task;
  bool holds_loop;
  int nvals; /* -1: the values are kept by the embedding layer */
  las_value_t *vals;
  char *errmsg;
  int ncb, cbcap;
  struct las__cbrec { las_cb fn; void *a; unsigned flags; } *cbs, cb_inline[1];
};

enum { LAS__W_NONE = 0, LAS__W_READY, LAS__W_FUTURE, LAS__W_TIMER, LAS__W_EXTERNAL, LAS__W_WOKEN };

struct las_task_s {
  las_future_t fut; /* first: a task pointer is a future pointer */
  las_step_cb step;
  void *ud;
  las_future_t *waited; /* not owned: cleared if that future dies first */
  las_timer_t timer;
  unsigned char wait;
  bool must_cancel;
  bool cancel_sent; /* a cancel cut a sleep short: it raises, whatever uncancel does after */
  bool in_cancel;   /* cancelling what it awaits (a cycle of awaits may lead back here) */
  int ncancel;
};

int las__push(las_loop_t *loop, las_cb fn, void *a, void *b, unsigned flags);
void las__entry_drop(las__entry_t *e);
void las__loop_update(las_loop_t *loop);
void las__timer_init(las_loop_t *loop, las_timer_t *t);
int las__timer_start(las_timer_t *t, double when, las_cb cb, void *a, void *b,
                     unsigned flags);
void las__future_init(las_future_t *f, las_loop_t *loop, bool is_task);
void las__task_dead(las_task_t *t);

#endif
