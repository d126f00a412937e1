/* future.c - futures and tasks: states, values, done callbacks, the task step machine. */
#include "las_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------ futures */

void las__future_init(las_future_t *f, las_loop_t *loop, bool is_task) {
  memset(f, 0, sizeof *f);
  f->loop = loop;
  atomic_init(&f->refs, 1);
  f->is_task = is_task;
  f->nvals = -1;
  f->cbs = f->cb_inline;
  f->cbcap = 1;
  las_loop_ref(loop);
}

las_future_t *las_future_new(las_loop_t *loop) {
  if (!loop || loop->state != LAS__OPEN) return NULL;
  las_future_t *f = malloc(sizeof *f);
  if (f) las__future_init(f, loop, false);
  return f;
}

void las_future_ref(las_future_t *f) { atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed); }

static void free_values(las_future_t *f) {
  if (f->vals) {
    for (int i = 0; i < f->nvals; i++)
      if (f->vals[i].type == LAS_VSTR) free((void *)f->vals[i].u.s.ptr);
    free(f->vals);
    f->vals = NULL;
  }
  free(f->errmsg);
  f->errmsg = NULL;
}

/* A task registered as a waiter does not own its `waited` pointer, so a future that dies
 * with waiters still registered clears their pointers before dropping their references. */
static void drop_callbacks(las_future_t *f) {
  for (int i = 0; i < f->ncb; i++) {
    struct las__cbrec *c = &f->cbs[i];
    if (c->flags & LAS__REF_A) {
      las_task_t *t = c->a;
      if (t->waited == f) t->waited = NULL;
      las_future_unref(c->a);
    }
  }
  f->ncb = 0;
  if (f->cbs != f->cb_inline) free(f->cbs);
  f->cbs = f->cb_inline;
}

void las_future_unref(las_future_t *f) {
  if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
  drop_callbacks(f);
  free_values(f);
  las_loop_t *loop = f->loop;
  if (f->is_task) {
    las_task_t *t = (las_task_t *)f;
    las_timer_stop(&t->timer);
    /* Once the loop closed, its count no longer matters, and this may be any thread. */
    if (f->state == LAS_PENDING && loop->state == LAS__OPEN && loop->ntasks > 0) loop->ntasks--;
  }
  if (f->holds_loop && loop->state == LAS__OPEN) las_loop_release(loop);
  free(f);
  las_loop_unref(loop);
}

las_loop_t *las_future_loop(const las_future_t *f) { return f->loop; }
las_state_t las_future_state(const las_future_t *f) { return (las_state_t)f->state; }
int las_future_is_task(const las_future_t *f) { return f->is_task; }

/* Completion hands every done callback to the ready queue with its own reference on the
 * future, so the future outlives the callbacks whatever its other owners do meanwhile. */
static int finish(las_future_t *f, las_state_t state) {
  if (f->state != LAS_PENDING) return LAS_ESTATE;
  f->state = (unsigned char)state;
  las_loop_t *loop = f->loop;
  for (int i = 0; i < f->ncb; i++) {
    struct las__cbrec *c = &f->cbs[i];
    las_future_ref(f);
    if (las__push(loop, c->fn, c->a, f, c->flags | LAS__REF_B)) {
      las__entry_t e = {c->fn, c->a, f, c->flags | LAS__REF_B};
      las__entry_drop(&e);
    }
  }
  f->ncb = 0;
  if (f->cbs != f->cb_inline) free(f->cbs);
  f->cbs = f->cb_inline;
  f->cbcap = 1;
  if (f->is_task && loop->ntasks > 0) loop->ntasks--;
  if (f->holds_loop) {
    f->holds_loop = false;
    las_loop_release(loop);
  }
  return 0;
}

/* A task's outcome is set by its own step, nobody else (others cancel it). */
static bool foreign_to_task(las_future_t *f) {
  return f->is_task && f->loop->current != (las_task_t *)f;
}

int las_future_complete(las_future_t *f, las_state_t state) {
  if (!f || (state != LAS_DONE && state != LAS_FAILED && state != LAS_CANCELLED)) return LAS_EINVAL;
  if (foreign_to_task(f)) return LAS_EINVAL;
  return finish(f, state);
}

/* Values a future may take: strings need a pointer unless empty. */
static int check_values(const las_value_t *vals, int n) {
  if (n < 0 || (n > 0 && !vals)) return LAS_EINVAL;
  for (int i = 0; i < n; i++)
    if (vals[i].type == LAS_VSTR && !vals[i].u.s.ptr && vals[i].u.s.len > 0) return LAS_EINVAL;
  return 0;
}

static void copy_string(char *to, const las_value_t *v) {
  if (v->u.s.len) memcpy(to, v->u.s.ptr, v->u.s.len);
  to[v->u.s.len] = '\0';
}

int las_future_set_values(las_future_t *f, const las_value_t *vals, int n) {
  if (!f || foreign_to_task(f) || check_values(vals, n)) return LAS_EINVAL;
  if (f->state != LAS_PENDING) return LAS_ESTATE;
  las_value_t *copy = n ? calloc((size_t)n, sizeof *copy) : NULL;
  if (n && !copy) return LAS_ENOMEM;
  for (int i = 0; i < n; i++) {
    copy[i] = vals[i];
    if (vals[i].type == LAS_VSTR) {
      char *s = malloc(vals[i].u.s.len + 1);
      if (!s) {
        f->vals = copy;
        f->nvals = i;
        free_values(f);
        f->nvals = -1;
        return LAS_ENOMEM;
      }
      copy_string(s, &vals[i]);
      copy[i].u.s.ptr = s;
    }
  }
  f->vals = copy;
  f->nvals = n;
  return finish(f, LAS_DONE);
}

int las_future_set_error(las_future_t *f, const char *message) {
  if (!f || foreign_to_task(f)) return LAS_EINVAL;
  if (f->state != LAS_PENDING) return LAS_ESTATE;
  f->errmsg = strdup(message ? message : "error");
  if (!f->errmsg) return LAS_ENOMEM;
  f->nvals = 0;
  return finish(f, LAS_FAILED);
}

int las_future_cancel(las_future_t *f) {
  if (!f) return 0;
  if (f->is_task) return las_task_cancel((las_task_t *)f);
  if (f->state != LAS_PENDING) return 0;
  finish(f, LAS_CANCELLED);
  return 1;
}

int las_future_values(const las_future_t *f, const las_value_t **vals) {
  if (vals) *vals = f->vals;
  return f->nvals;
}

const char *las_future_error_message(const las_future_t *f) { return f->errmsg; }

void las_future_hold_loop(las_future_t *f) {
  if (f->holds_loop || f->state != LAS_PENDING) return;
  f->holds_loop = true;
  las_loop_hold(f->loop);
}

int las_future_add_callback(las_future_t *f, las_cb cb, void *a) {
  if (!f || !cb) return LAS_EINVAL;
  if (f->state != LAS_PENDING) {
    las_future_ref(f);
    int rc = las__push(f->loop, cb, a, f, LAS__REF_B);
    if (rc) las_future_unref(f);
    return rc;
  }
  if (f->ncb == f->cbcap) {
    int cap = f->cbcap * 4;
    struct las__cbrec *n = malloc((size_t)cap * sizeof *n);
    if (!n) return LAS_ENOMEM;
    memcpy(n, f->cbs, (size_t)f->ncb * sizeof *n);
    if (f->cbs != f->cb_inline) free(f->cbs);
    f->cbs = n;
    f->cbcap = cap;
  }
  f->cbs[f->ncb].fn = cb;
  f->cbs[f->ncb].a = a;
  f->cbs[f->ncb].flags = 0;
  f->ncb++;
  return 0;
}

int las_future_remove_callback(las_future_t *f, las_cb cb, void *a) {
  int j = 0, removed = 0;
  for (int i = 0; i < f->ncb; i++) {
    if (f->cbs[i].fn == cb && f->cbs[i].a == a && !(f->cbs[i].flags & LAS__REF_A)) removed++;
    else f->cbs[j++] = f->cbs[i];
  }
  f->ncb = j;
  return removed;
}

int las_future_callback_count(const las_future_t *f) { return f->ncb; }

int las_future_callback_at(const las_future_t *f, int i, las_cb *cb, void **a) {
  if (i < 0 || i >= f->ncb) return LAS_EINVAL;
  *cb = f->cbs[i].fn;
  *a = f->cbs[i].a;
  return 0;
}

/* ------------------------------------------------------------------- foreign completion */

typedef struct {
  las_future_t *f;
  int kind; /* 0 values, 1 error, 2 cancel */
  int n;
  char *err;
  las_value_t vals[];
} post_msg;

static void post_deliver(las_loop_t *loop, void *arg, int status) {
  (void)loop;
  post_msg *m = arg;
  if (status == 0 && m->f->state == LAS_PENDING) {
    if (m->kind == 0) las_future_set_values(m->f, m->vals, m->n);
    else if (m->kind == 1) las_future_set_error(m->f, m->err);
    else las_future_cancel(m->f);
  }
  for (int i = 0; i < m->n; i++)
    if (m->vals[i].type == LAS_VSTR) free((void *)m->vals[i].u.s.ptr);
  free(m->err);
  las_future_unref(m->f);
  free(m);
}

/* Copies everything the message needs on the calling thread, so the caller's buffers may be
 * reused as soon as this returns. */
static int post(las_future_t *f, int kind, const las_value_t *vals, int n, const char *err) {
  if (!f || check_values(vals, n) || (f->is_task && kind != 2)) return LAS_EINVAL;
  post_msg *m = calloc(1, sizeof *m + (size_t)n * sizeof(las_value_t));
  if (!m) return LAS_ENOMEM;
  m->f = f;
  m->kind = kind;
  for (int i = 0; i < n; i++) {
    m->vals[i] = vals[i];
    if (vals[i].type == LAS_VSTR) {
      char *s = malloc(vals[i].u.s.len + 1);
      if (!s) goto oom;
      copy_string(s, &vals[i]);
      m->vals[i].u.s.ptr = s;
    }
    m->n = i + 1;
  }
  if (kind == 1 && !(m->err = strdup(err ? err : "error"))) goto oom;
  int rc = las_loop_post(f->loop, post_deliver, m);
  if (rc == 0) return 0;
  for (int i = 0; i < m->n; i++)
    if (m->vals[i].type == LAS_VSTR) free((void *)m->vals[i].u.s.ptr);
  free(m->err);
  free(m);
  return rc;
oom:
  for (int i = 0; i < m->n; i++)
    if (m->vals[i].type == LAS_VSTR) free((void *)m->vals[i].u.s.ptr);
  free(m);
  return LAS_ENOMEM;
}

int las_future_post_values(las_future_t *f, const las_value_t *vals, int n) {
  return post(f, 0, vals, n, NULL);
}
int las_future_post_error(las_future_t *f, const char *message) {
  return post(f, 1, NULL, 0, message);
}
int las_future_post_cancel(las_future_t *f) { return post(f, 2, NULL, 0, NULL); }

/* -------------------------------------------------------------------------------- tasks */

las_task_t *las_task_new(las_loop_t *loop, las_step_cb step, void *ud) {
  if (!loop || !step || loop->state != LAS__OPEN) return NULL;
  las_task_t *t = malloc(sizeof *t);
  if (!t) return NULL;
  las__future_init(&t->fut, loop, true);
  t->step = step;
  t->ud = ud;
  t->waited = NULL;
  las__timer_init(loop, &t->timer);
  t->wait = LAS__W_NONE;
  t->must_cancel = t->cancel_sent = t->in_cancel = false;
  t->ncancel = 0;
  loop->ntasks++;
  return t;
}

las_future_t *las_task_future(las_task_t *t) { return &t->fut; }
las_task_t *las_task_from_future(las_future_t *f) { return f && f->is_task ? (las_task_t *)f : NULL; }
void *las_task_data(const las_task_t *t) { return t->ud; }
int las_task_cancelling(const las_task_t *t) { return t->ncancel; }
/* Withdrawing the last request also withdraws a cancellation still waiting for the next
 * suspension (asyncio 3.13): a timeout whose deadline met the result in one iteration must
 * not leave a stray CancelledError behind. */
int las_task_uncancel(las_task_t *t) {
  if (t->ncancel > 0 && --t->ncancel == 0) t->must_cancel = false;
  return t->ncancel;
}
las_future_t *las_task_waited(const las_task_t *t) { return t->waited; }
int las_task_suspended(const las_task_t *t) { return t->wait != LAS__W_NONE; }
las_step_cb las_task_step(const las_task_t *t) { return t->step; }

int las_task_take_cancel(las_task_t *t) {
  bool c = t->must_cancel || t->cancel_sent;
  t->must_cancel = t->cancel_sent = false;
  return c;
}

/* Runs one step of the task; `current` is set around it so that the embedding layer (and
 * nested spawns) can see which task is running. */
static void run_step(las_task_t *t) {
  las_loop_t *loop = t->fut.loop;
  las_task_t *prev = loop->current;
  t->wait = LAS__W_NONE;
  loop->current = t;
  loop->stepped = t;
  t->step(t, t->ud);
  loop->current = prev;
}

static void step_cb(void *a, void *b) {
  (void)b;
  las_task_t *t = a;
  if (t->fut.state == LAS_PENDING && t->wait == LAS__W_READY) {
    t->waited = NULL;
    run_step(t);
  }
}

/* The wakeup is the awaited future's done callback; it runs the step directly, so a result
 * reaches the task in the same iteration the callback was scheduled for (as asyncio's
 * Task.__wakeup does). */
static void wakeup_cb(void *a, void *b) {
  las_task_t *t = a;
  if (t->fut.state == LAS_PENDING && t->wait == LAS__W_FUTURE && t->waited == b) {
    run_step(t);
    /* The entry's reference on b is about to go: the borrowed pointer must not outlive it. */
    if (t->waited == b) t->waited = NULL;
  }
}

int las_task_schedule(las_task_t *t) {
  if (t->fut.state != LAS_PENDING) return LAS_ESTATE;
  if (t->wait == LAS__W_READY) return 0;
  las_future_ref(&t->fut);
  int rc = las__push(t->fut.loop, step_cb, t, NULL, LAS__REF_A);
  if (rc) {
    las_future_unref(&t->fut);
    return rc;
  }
  t->wait = LAS__W_READY;
  return 0;
}

int las_task_wait(las_task_t *t, las_future_t *f) {
  if (!f || f == &t->fut || f->loop != t->fut.loop) return LAS_EINVAL;
  if (f->state != LAS_PENDING) return LAS_ESTATE;
  int rc = las_future_add_callback(f, wakeup_cb, t);
  if (rc) return rc;
  f->cbs[f->ncb - 1].flags = LAS__REF_A;
  las_future_ref(&t->fut);
  t->waited = f;
  t->wait = LAS__W_FUTURE;
  if (t->must_cancel && las_future_cancel(f)) t->must_cancel = false;
  return 0;
}

int las_task_wait_external(las_task_t *t) {
  if (t->fut.state != LAS_PENDING) return LAS_ESTATE;
  t->waited = NULL;
  t->wait = LAS__W_EXTERNAL;
  return 0;
}

static void woken_cb(void *a, void *b) {
  (void)b;
  las_task_t *t = a;
  if (t->fut.state == LAS_PENDING && t->wait == LAS__W_WOKEN) run_step(t);
}

int las_task_wake(las_task_t *t) {
  if (t->fut.state != LAS_PENDING || t->wait != LAS__W_EXTERNAL) return LAS_ESTATE;
  las_future_ref(&t->fut);
  int rc = las__push(t->fut.loop, woken_cb, t, NULL, LAS__REF_A);
  if (rc) {
    las_future_unref(&t->fut);
    return rc;
  }
  t->wait = LAS__W_WOKEN;
  return 0;
}

void las_loop_set_cancel_hook(las_loop_t *loop, las_cancel_hook hook) { loop->cancel_hook = hook; }
las_cancel_hook las_loop_get_cancel_hook(las_loop_t *loop) { return loop ? loop->cancel_hook : NULL; }

static void timer_cb(void *a, void *b) {
  (void)b;
  las_task_t *t = a;
  if (t->fut.state == LAS_PENDING && t->wait == LAS__W_TIMER) run_step(t);
}

int las_task_sleep_until(las_task_t *t, double when) {
  if (t->must_cancel) return las_task_schedule(t);
  las_future_ref(&t->fut);
  int rc = las__timer_start(&t->timer, when, timer_cb, t, NULL, LAS__REF_A);
  if (rc) {
    las_future_unref(&t->fut);
    return rc;
  }
  t->waited = NULL;
  t->wait = LAS__W_TIMER;
  return 0;
}

int las_task_cancel(las_task_t *t) {
  if (t->fut.state != LAS_PENDING) return 0;
  t->ncancel++;
  switch (t->wait) {
  case LAS__W_FUTURE:
    if (t->in_cancel) {
      /* Tasks awaiting each other in a cycle: cancelling what we wait for led back here.
       * Stop waiting (the wake-up record finds the task no longer waiting on it) and wake
       * with the cancellation; the others then see this task end cancelled. */
      t->waited = NULL;
      t->wait = LAS__W_NONE;
      t->cancel_sent = true;
      las_task_schedule(t);
      return 1;
    }
    /* Cancelling what we wait for wakes us with its cancellation; if it was already done
     * (its result is on the way), the request waits for the next suspension instead. */
    if (t->waited) {
      t->in_cancel = true;
      int woken = las_future_cancel(t->waited);
      t->in_cancel = false;
      if (woken) return 1;
    }
    break;
  case LAS__W_EXTERNAL: {
    las_loop_t *loop = t->fut.loop;
    if (loop->cancel_hook && loop->cancel_hook(t, loop->data)) return 1;
    break;
  }
  case LAS__W_TIMER:
    /* The sleep is cut short, as asyncio cancels the future a sleep waits on: the wake-up
     * raises even if uncancel() comes before it (else the sleep would just end early). */
    las_timer_stop(&t->timer);
    t->wait = LAS__W_NONE;
    t->cancel_sent = true;
    las_task_schedule(t);
    return 1;
  default:
    break;
  }
  t->must_cancel = true;
  return 1;
}
