/* loop.c - the callback loop: ready queue, timer heap, libuv integration, posts. */
#include "las_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *las_strerror(int err) {
  switch (err) {
  case 0: return "success";
#define LAS__ERRSTR(name, code, msg) case code: return msg;
    LAS_ERRNO_MAP(LAS__ERRSTR)
#undef LAS__ERRSTR
  default: return "unknown lasync error";
  }
}

/* ----------------------------------------------------------------------------- the ring */

#define LAS__RING_KEEP 4096 /* entries a drained ring keeps; a larger one is freed */

/* Doubles the ring, unwrapping it so that the entries start at index 0 again. */
static int ring_grow(las__ring_t *r) {
  size_t cap = r->buf ? (r->mask + 1) * 2 : 64;
  las__entry_t *nb = malloc(cap * sizeof *nb);
  if (!nb) return LAS_ENOMEM;
  for (size_t i = 0; i < r->count; i++) nb[i] = r->buf[(r->head + i) & r->mask];
  free(r->buf);
  r->buf = nb;
  r->head = 0;
  r->mask = cap - 1;
  return 0;
}

void las__entry_drop(las__entry_t *e) {
  if (e->flags & LAS__REF_A) las_future_unref(e->a);
  if (e->flags & LAS__REF_B) las_future_unref(e->b);
}

/* Starting the idle handle is what keeps libuv's poll from blocking while callbacks wait,
 * so every push outside a pass makes sure it runs. */
int las__push(las_loop_t *loop, las_cb fn, void *a, void *b, unsigned flags) {
  las__ring_t *r = &loop->ready;
  if (loop->state != LAS__OPEN) return LAS_ECLOSED;
  if ((!r->buf || r->count > r->mask) && ring_grow(r)) return LAS_ENOMEM;
  las__entry_t *e = &r->buf[(r->head + r->count) & r->mask];
  e->fn = fn;
  e->a = a;
  e->b = b;
  e->flags = flags;
  r->count++;
  if (!loop->idle_on && !loop->in_pass) las__loop_update(loop);
  return 0;
}

int las_call_soon(las_loop_t *loop, las_cb cb, void *a, void *b) {
  if (!loop || !cb) return LAS_EINVAL;
  return las__push(loop, cb, a, b, 0);
}

/* --------------------------------------------------------------------------- the timers */

static bool timer_less(const las_timer_t *x, const las_timer_t *y) {
  return x->when < y->when || (x->when == y->when && x->seq < y->seq);
}

static void heap_set(las_loop_t *loop, size_t i, las_timer_t *t) {
  loop->heap[i] = t;
  t->idx = i;
}

static void heap_up(las_loop_t *loop, size_t i) {
  las_timer_t *t = loop->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!timer_less(t, loop->heap[p])) break;
    heap_set(loop, i, loop->heap[p]);
    i = p;
  }
  heap_set(loop, i, t);
}

static void heap_down(las_loop_t *loop, size_t i) {
  las_timer_t *t = loop->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= loop->nheap) break;
    if (c + 1 < loop->nheap && timer_less(loop->heap[c + 1], loop->heap[c])) c++;
    if (!timer_less(loop->heap[c], t)) break;
    heap_set(loop, i, loop->heap[c]);
    i = c;
  }
  heap_set(loop, i, t);
}

static void heap_remove(las_loop_t *loop, las_timer_t *t) {
  size_t i = t->idx;
  las_timer_t *last = loop->heap[--loop->nheap];
  t->idx = LAS__NOIDX;
  if (last == t) return;
  heap_set(loop, i, last);
  if (i > 0 && timer_less(last, loop->heap[(i - 1) / 2])) heap_up(loop, i);
  else heap_down(loop, i);
}

void las__timer_init(las_loop_t *loop, las_timer_t *t) {
  memset(t, 0, sizeof *t);
  t->loop = loop;
  t->idx = LAS__NOIDX;
}

las_timer_t *las_timer_new(las_loop_t *loop) {
  if (!loop) return NULL;
  las_timer_t *t = malloc(sizeof *t);
  if (t) {
    las__timer_init(loop, t);
    t->pub = true;
  }
  return t;
}

/* The ready entry of a due public timer: it runs the callback only if the timer was not
 * stopped or restarted since it was queued, and frees a timer freed meanwhile. */
static void timer_fire(void *a, void *b) {
  las_timer_t *t = a;
  t->queued--;
  if (t->zombie) {
    if (t->queued == 0) free(t);
    return;
  }
  if ((unsigned)(uintptr_t)b == t->gen) t->fn(t->a, t->b);
}

int las__timer_start(las_timer_t *t, double when, las_cb cb, void *a, void *b,
                     unsigned flags) {
  las_loop_t *loop = t->loop;
  if (loop->state != LAS__OPEN) return LAS_ECLOSED;
  if (!cb || isnan(when)) return LAS_EINVAL;
  las_timer_stop(t); /* also invalidates an entry of this timer already queued */
  if (loop->nheap == loop->heapcap) {
    size_t cap = loop->heapcap ? loop->heapcap * 2 : 64;
    las_timer_t **nh = realloc(loop->heap, cap * sizeof *nh);
    if (!nh) return LAS_ENOMEM;
    loop->heap = nh;
    loop->heapcap = cap;
  }
  t->when = when;
  t->seq = loop->timer_seq++;
  t->fn = cb;
  t->a = a;
  t->b = b;
  t->flags = flags;
  heap_set(loop, loop->nheap++, t);
  heap_up(loop, t->idx);
  if (t->idx == 0 && !loop->in_pass) las__loop_update(loop);
  return 0;
}

int las_timer_start(las_timer_t *t, double when, las_cb cb, void *a, void *b) {
  if (!t) return LAS_EINVAL;
  return las__timer_start(t, when, cb, a, b, 0);
}

void las_timer_stop(las_timer_t *t) {
  if (!t) return;
  t->gen++;
  if (t->idx == LAS__NOIDX) return;
  bool was_first = t->idx == 0;
  heap_remove(t->loop, t);
  /* The wake timer was armed for this deadline: re-arm it for the next one (or disarm it),
   * or the loop would look alive, and wake, for a timer that is gone. */
  if (was_first && !t->loop->in_pass && t->loop->state == LAS__OPEN) las__loop_update(t->loop);
  las__entry_t e = {t->fn, t->a, t->b, t->flags};
  t->flags = 0;
  las__entry_drop(&e);
}

int las_timer_active(const las_timer_t *t) { return t && t->idx != LAS__NOIDX; }
double las_timer_when(const las_timer_t *t) { return t ? t->when : NAN; }

void las_timer_free(las_timer_t *t) {
  if (!t) return;
  las_timer_stop(t);
  if (t->queued > 0) t->zombie = true;
  else free(t);
}

/* ------------------------------------------------------------------------------ running */

double las_loop_time(las_loop_t *loop) {
  (void)loop;
  return (double)uv_hrtime() * 1e-9;
}

static void noop_idle_cb(uv_idle_t *h) { (void)h; }
static void move_due_timers(las_loop_t *loop);

/* The wake timer fires in libuv's timer phase, before the poll: it must make the due timers
 * ready right there (so that the idle handle keeps the poll from blocking) and re-arm for
 * the rest, or a poll with nothing else armed would block forever. */
static void wake_cb(uv_timer_t *h) {
  las_loop_t *loop = h->data;
  loop->armed = NAN; /* not armed */
  move_due_timers(loop);
  las__loop_update(loop);
}

/* Brings the libuv handles in line with the queues: idle runs while callbacks are ready,
 * the wake timer is armed for the earliest deadline (rounded up to whole milliseconds, so
 * that it never fires early and spins). */
void las__loop_update(las_loop_t *loop) {
  if (loop->state != LAS__OPEN) return;
  bool want_idle = loop->ready.count > 0;
  if (want_idle != loop->idle_on) {
    if (want_idle) uv_idle_start(&loop->idle, noop_idle_cb);
    else uv_idle_stop(&loop->idle);
    loop->idle_on = want_idle;
  }
  if (loop->nheap == 0) {
    if (!isnan(loop->armed)) uv_timer_stop(&loop->wake);
    loop->armed = NAN; /* not armed */
  } else if (loop->heap[0]->when != loop->armed) {
    double delay = loop->heap[0]->when - las_loop_time(loop);
    double ms = delay <= 0 ? 0 : ceil(delay * 1e3);
    if (ms > 1e12) ms = 1e12; /* a deadline at infinity still arms a finite libuv timer */
    uv_timer_start(&loop->wake, wake_cb, (uint64_t)ms, 0);
    loop->armed = loop->heap[0]->when;
  }
  if (loop->holds > 0) uv_ref((uv_handle_t *)&loop->async);
  else uv_unref((uv_handle_t *)&loop->async);
}

/* Moves every due timer into the ready queue, in deadline order. */
static void move_due_timers(las_loop_t *loop) {
  if (loop->nheap == 0) return;
  double now = las_loop_time(loop);
  while (loop->nheap > 0 && loop->heap[0]->when <= now) {
    las_timer_t *t = loop->heap[0];
    heap_remove(loop, t);
    unsigned flags = t->flags;
    t->flags = 0;
    if (t->pub) {
      if (las__push(loop, timer_fire, t, (void *)(uintptr_t)t->gen, 0) == 0) t->queued++;
      continue;
    }
    if (las__push(loop, t->fn, t->a, t->b, flags)) {
      las__entry_t e = {t->fn, t->a, t->b, flags};
      las__entry_drop(&e); /* out of memory: the timer is lost, never half-run */
    }
  }
  loop->armed = NAN; /* not armed */
}

/* One asyncio iteration: the callbacks that were ready when it began, in FIFO order. Each
 * entry is copied out before it runs, so a callback may push (and grow the ring) freely. */
static void run_pass(las_loop_t *loop) {
  move_due_timers(loop);
  loop->in_pass = true;
  size_t n = loop->ready.count;
  for (size_t i = 0; i < n && loop->state == LAS__OPEN; i++) {
    las__ring_t *r = &loop->ready;
    las__entry_t e = r->buf[r->head];
    r->head = (r->head + 1) & r->mask;
    r->count--;
    if (loop->debug) {
      loop->stepped = NULL;
      uint64_t t0 = uv_hrtime();
      e.fn(e.a, e.b);
      double dt = (double)(uv_hrtime() - t0) * 1e-9;
      if (dt >= loop->slow && loop->slow_hook) loop->slow_hook(loop, loop->stepped, e.fn, dt);
    } else {
      e.fn(e.a, e.b);
    }
    las__entry_drop(&e);
  }
  loop->in_pass = false;
  /* A burst (100,000 spawns) grows the ring; once drained, give the memory back. */
  if (loop->ready.count == 0 && loop->ready.mask + 1 > LAS__RING_KEEP) {
    free(loop->ready.buf);
    loop->ready.buf = NULL;
    loop->ready.head = 0;
    loop->ready.mask = 0;
  }
  las__loop_update(loop);
}

/* Passes run back to back while callbacks keep becoming ready, without a poll between them:
 * a poll is a system call, and a chain of sleep(0)s or task hand-offs would pay one per pass.
 * Each pass is still exactly one iteration (it takes the queue as it was when it began); I/O
 * and posts from other threads are looked at after at most LAS__PASSES passes, or as soon as
 * a pass leaves nothing ready. */
#define LAS__PASSES 16
static void check_cb(uv_check_t *h) {
  las_loop_t *loop = h->data;
  int passes = loop->one_pass ? 1 : LAS__PASSES;
  for (int i = 0; i < passes && !loop->stopping; i++) {
    run_pass(loop);
    if (loop->ready.count == 0) break;
  }
}

/* Drains every queued post: libuv coalesces async sends, so one wakeup may carry many. */
static void async_cb(uv_async_t *h) {
  las_loop_t *loop = h->data;
  uv_mutex_lock(&loop->mu);
  las__post_t *p = loop->phead;
  loop->phead = loop->ptail = NULL;
  uv_mutex_unlock(&loop->mu);
  loop->in_post = true; /* where the loop cannot be closed, as in any of its callbacks */
  while (p) {
    las__post_t *next = p->next;
    p->cb(loop, p->arg, loop->state == LAS__OPEN ? 0 : LAS_ECANCELED);
    free(p);
    p = next;
  }
  loop->in_post = false;
}

int las_loop_new(las_loop_t **out, uv_loop_t *uv) {
  las_loop_t *loop = calloc(1, sizeof *loop);
  if (!loop) return LAS_ENOMEM;
  if (!uv) {
    if (uv_loop_init(&loop->own_uv)) { free(loop); return LAS_EUV; }
    uv = &loop->own_uv;
    uv->data = loop;
    loop->owns_uv = true;
  }
  if (uv_mutex_init(&loop->mu)) {
    if (loop->owns_uv) uv_loop_close(uv);
    free(loop);
    return LAS_EUV;
  }
  loop->uv = uv;
  atomic_init(&loop->refs, 1);
  loop->armed = NAN; /* not armed */
  loop->slow = 0.1;
  uv_check_init(uv, &loop->check);
  uv_idle_init(uv, &loop->idle);
  uv_timer_init(uv, &loop->wake);
  uv_async_init(uv, &loop->async, async_cb);
  loop->check.data = loop->idle.data = loop->wake.data = loop->async.data = loop;
  loop->handles_open = 4;
  uv_check_start(&loop->check, check_cb);
  uv_unref((uv_handle_t *)&loop->check);
  uv_unref((uv_handle_t *)&loop->async);
  *out = loop;
  return 0;
}

int las_loop_alive(las_loop_t *loop) {
  return loop->state == LAS__OPEN &&
         (loop->ready.count > 0 || loop->nheap > 0 || loop->holds > 0 || uv_loop_alive(loop->uv));
}

int las_loop_run(las_loop_t *loop) {
  if (loop->state != LAS__OPEN) return LAS_ECLOSED;
  if (loop->running) return LAS_ERUNNING;
  loop->running = true;
  loop->stopping = false;
  las__loop_update(loop);
  while (!loop->stopping && las_loop_alive(loop)) uv_run(loop->uv, UV_RUN_ONCE);
  loop->running = false;
  loop->stopping = false;
  return 0;
}

int las_loop_run_once(las_loop_t *loop) {
  if (loop->state != LAS__OPEN || loop->running) return 0;
  las__loop_update(loop);
  loop->one_pass = true;
  loop->running = true;
  uv_run(loop->uv, las_loop_alive(loop) ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  loop->running = false;
  loop->one_pass = false;
  return las_loop_alive(loop);
}

void las_loop_stop(las_loop_t *loop) {
  loop->stopping = true;
  uv_stop(loop->uv);
}

uv_loop_t *las_loop_uv(las_loop_t *loop) { return loop->uv; }
void las_loop_set_data(las_loop_t *loop, void *data) { loop->data = data; }
void *las_loop_get_data(las_loop_t *loop) { return loop->data; }
size_t las_loop_ready_count(las_loop_t *loop) { return loop->ready.count; }
size_t las_loop_timer_count(las_loop_t *loop) { return loop->nheap; }
size_t las_loop_task_count(las_loop_t *loop) { return loop->ntasks; }
int las_loop_in_callback(las_loop_t *loop) { return loop->running || loop->in_pass || loop->in_post; }
int las_loop_has_work(las_loop_t *loop) {
  return loop->state == LAS__OPEN && (loop->ready.count > 0 || loop->nheap > 0 || loop->holds > 0);
}
las_task_t *las_loop_current_task(las_loop_t *loop) { return loop->current; }

void las_loop_hold(las_loop_t *loop) {
  if (loop->holds++ == 0) las__loop_update(loop);
}

void las_loop_release(las_loop_t *loop) {
  if (loop->holds > 0 && --loop->holds == 0) las__loop_update(loop);
}

void las_loop_work_begin(las_loop_t *loop) {
  loop->works++;
  las_loop_hold(loop);
}

void las_loop_work_end(las_loop_t *loop) {
  if (loop->works == 0) return;
  loop->works--;
  las_loop_release(loop);
}

size_t las_loop_work_count(las_loop_t *loop) { return loop->works; }

void las_loop_set_debug(las_loop_t *loop, int on, double threshold, las_slow_cb hook) {
  loop->debug = on != 0;
  if (threshold >= 0) loop->slow = threshold;
  loop->slow_hook = hook;
}

/* -------------------------------------------------------------------------------- posts */

/* The send happens under the mutex, and closing sets `pclosed` under the same mutex before
 * the async handle is closed, so no producer can ever touch a closed handle. */
int las_loop_post(las_loop_t *loop, las_post_cb cb, void *arg) {
  if (!loop || !cb) return LAS_EINVAL;
  las__post_t *p = malloc(sizeof *p);
  if (!p) return LAS_ENOMEM;
  p->next = NULL;
  p->cb = cb;
  p->arg = arg;
  uv_mutex_lock(&loop->mu);
  if (loop->pclosed) {
    uv_mutex_unlock(&loop->mu);
    free(p);
    return LAS_ECLOSED;
  }
  if (loop->ptail) loop->ptail->next = p;
  else loop->phead = p;
  loop->ptail = p;
  uv_async_send(&loop->async);
  uv_mutex_unlock(&loop->mu);
  return 0;
}

/* ------------------------------------------------------------------------------ closing */

void las_loop_ref(las_loop_t *loop) { atomic_fetch_add_explicit(&loop->refs, 1, memory_order_relaxed); }

void las_loop_unref(las_loop_t *loop) {
  if (!loop || atomic_fetch_sub_explicit(&loop->refs, 1, memory_order_acq_rel) != 1) return;
  uv_mutex_destroy(&loop->mu);
  free(loop->ready.buf);
  free(loop->heap);
  free(loop);
}

static void on_handle_closed(uv_handle_t *h) {
  las_loop_t *loop = h->data;
  loop->handles_open--;
}

/* On an adopted uv loop each closing handle holds a reference to the loop's memory. */
static void on_adopted_closed(uv_handle_t *h) {
  las_loop_t *loop = h->data;
  loop->handles_open--;
  las_loop_unref(loop);
}

/* Closing is a state: posts are refused from here on, queued posts are told, callbacks and
 * timers are dropped unrun, and the libuv handles are closed: on a private uv loop they are
 * waited for; on an adopted one the host runs its loop, possibly around this very call (it
 * may come from one of the host's callbacks), so it is never run here: the handles finish
 * closing in the host's next iteration, each keeping the memory until then. The memory
 * itself goes with the last reference. */
static void do_close(las_loop_t *loop) {
  uv_mutex_lock(&loop->mu);
  /* Under the mutex: a producer refused with LAS_ECLOSED may drop its future's last
   * reference on its own thread, and must then see the loop closed (no release, no libuv). */
  loop->state = LAS__CLOSED;
  loop->pclosed = true;
  las__post_t *p = loop->phead;
  loop->phead = loop->ptail = NULL;
  uv_mutex_unlock(&loop->mu);
  for (; p; ) {
    las__post_t *next = p->next;
    p->cb(loop, p->arg, LAS_ECANCELED);
    free(p);
    p = next;
  }
  while (loop->ready.count > 0) {
    las__ring_t *r = &loop->ready;
    las__entry_t e = r->buf[r->head];
    r->head = (r->head + 1) & r->mask;
    r->count--;
    if (e.fn == timer_fire) {
      las_timer_t *t = e.a;
      if (--t->queued == 0 && t->zombie) free(t);
    }
    las__entry_drop(&e);
  }
  while (loop->nheap > 0) las_timer_stop(loop->heap[0]);
  uv_close_cb done = on_handle_closed;
  if (!loop->owns_uv) {
    atomic_fetch_add_explicit(&loop->refs, loop->handles_open, memory_order_relaxed);
    done = on_adopted_closed;
  }
  uv_close((uv_handle_t *)&loop->check, done);
  uv_close((uv_handle_t *)&loop->idle, done);
  uv_close((uv_handle_t *)&loop->wake, done);
  uv_close((uv_handle_t *)&loop->async, done);
  if (!loop->owns_uv) return;
  while (loop->handles_open > 0) uv_run(loop->uv, UV_RUN_NOWAIT);
  uv_loop_close(loop->uv);
}

/* Counts the open handles on a private uv loop that are not the loop's own: the user's
 * live work, which a clean close must not pull out from under them. */
static void count_foreign(uv_handle_t *h, void *arg) {
  las_loop_t *loop = h->loop->data;
  if (uv_is_closing(h) || h == (uv_handle_t *)&loop->check || h == (uv_handle_t *)&loop->idle ||
      h == (uv_handle_t *)&loop->wake || h == (uv_handle_t *)&loop->async)
    return;
  (*(int *)arg)++;
}

int las_loop_close(las_loop_t *loop) {
  if (!loop) return LAS_EINVAL;
  if (loop->state != LAS__OPEN) return LAS_ECLOSED;
  if (loop->running || loop->in_pass || loop->in_post) return LAS_ERUNNING;
  if (loop->ready.count || loop->nheap || loop->ntasks || loop->holds) return LAS_EBUSY;
  if (loop->owns_uv) {
    /* With no ready callbacks, timers or holds our own handles keep nothing alive, so an
     * alive loop means the user's requests (thread-pool work, say) or handles. */
    int foreign = 0;
    uv_walk(loop->uv, count_foreign, &foreign);
    if (foreign || uv_loop_alive(loop->uv)) return LAS_EBUSY;
  }
  do_close(loop);
  loop->released = true;
  las_loop_unref(loop);
  return 0;
}

void las_loop_destroy(las_loop_t *loop) {
  if (!loop || loop->released) return; /* closed already: the creator holds nothing */
  if (loop->state == LAS__OPEN) do_close(loop);
  loop->released = true;
  las_loop_unref(loop);
}
