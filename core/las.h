/*
 * las.h - the lasync core: an asyncio-shaped callback loop, futures and tasks on libuv.
 *
 * This header is language-neutral: it never mentions Lua. It is also the C half of the
 * embedding API (bindings/lasync.h adds the Lua half).
 *
 * Threading: every function here must be called on the loop thread, except the ones marked
 * "any thread". Errors are negative ints from LAS_ERRNO_MAP; las_strerror names them.
 */
#ifndef LAS_H
#define LAS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LAS_ERRNO_MAP(X)                                                  \
  X(EBUSY, -1, "loop has live work (ready callbacks, timers or tasks)")   \
  X(ECLOSED, -2, "loop is closed")                                        \
  X(ECANCELED, -3, "operation canceled")                                  \
  X(ENOMEM, -4, "out of memory")                                          \
  X(EINVAL, -5, "invalid argument")                                       \
  X(ESTATE, -6, "invalid state: the future is already done")              \
  X(ERUNNING, -7, "loop is already running")                              \
  X(EUV, -8, "libuv call failed")

typedef enum {
#define LAS__ERRENUM(name, code, msg) LAS_##name = code,
  LAS_ERRNO_MAP(LAS__ERRENUM)
#undef LAS__ERRENUM
  LAS__ERRMAX = -9
} las_errno_t;

/* Returns a static message for an error code (also for 0 and unknown codes). */
const char *las_strerror(int err);

typedef struct las_loop_s las_loop_t;
typedef struct las_future_s las_future_t;
typedef struct las_task_s las_task_t;
typedef struct las_timer_s las_timer_t;

/* The one callback shape of the ready queue: a function and two opaque words. */
typedef void (*las_cb)(void *a, void *b);

/* ---------------------------------------------------------------------------------- loop */

/* Creates a loop. With uv == NULL the loop owns a private uv_loop_t; otherwise it adopts
 * the given one (which must outlive it) and the host may drive it with uv_run itself. */
int las_loop_new(las_loop_t **out, uv_loop_t *uv);
/* Closes a loop that has no live work and drops the creator's reference. Returns LAS_EBUSY
 * and changes nothing while ready callbacks, timers, tasks or holds remain, or (on a
 * private uv loop) the user's libuv handles or requests; LAS_ERUNNING while it runs or from
 * inside one of its callbacks. A clean close leaves the private uv_loop_close at 0. On an
 * adopted uv loop (which the host may be running right now) lasync's handles are closed
 * but not waited for: they finish in the host's next uv_run iteration, as libuv's own
 * uv_close does, so run the uv loop once more before uv_loop_close. The same holds for
 * las_loop_destroy. */
int las_loop_close(las_loop_t *loop);
/* Closes a loop whatever it holds: pending callbacks and timers are dropped without being
 * called, queued posts get LAS_ECANCELED. Drops the creator's reference. Accepts NULL. Not
 * from inside one of the loop's callbacks (las_loop_close refuses there with LAS_ERUNNING). */
void las_loop_destroy(las_loop_t *loop);
/* Reference counting for the loop's memory (any thread). A thread that may call
 * las_loop_post after the creator closed the loop must hold a reference. */
void las_loop_ref(las_loop_t *loop);
void las_loop_unref(las_loop_t *loop);

/* Runs until las_loop_stop or until nothing can make progress. Returns 0, LAS_ERUNNING,
 * or LAS_ECLOSED. */
int las_loop_run(las_loop_t *loop);
/* Runs exactly one iteration (polling I/O without blocking if callbacks are ready).
 * Returns nonzero while there is more work; 0 at once if the loop is already running. */
int las_loop_run_once(las_loop_t *loop);
void las_loop_stop(las_loop_t *loop);
/* Nonzero when callbacks, timers, holds or libuv handles could still make progress. */
int las_loop_alive(las_loop_t *loop);
/* Monotonic seconds. */
double las_loop_time(las_loop_t *loop);
uv_loop_t *las_loop_uv(las_loop_t *loop);
/* One opaque word for the embedding layer (the Lua binding keeps its state here). */
void las_loop_set_data(las_loop_t *loop, void *data);
void *las_loop_get_data(las_loop_t *loop);
/* Number of callbacks waiting in the ready queue and of pending timers. */
size_t las_loop_ready_count(las_loop_t *loop);
size_t las_loop_timer_count(las_loop_t *loop);

/* Schedules cb(a, b) for the next pass over the ready queue (asyncio's call_soon). */
int las_call_soon(las_loop_t *loop, las_cb cb, void *a, void *b);

/* Keep-alive for external work: while holds > 0, las_loop_run does not return for lack of
 * work (an outstanding completion from another thread, say). */
void las_loop_hold(las_loop_t *loop);
void las_loop_release(las_loop_t *loop);
/* Work in flight that ends by itself (a blocking call on the libuv thread pool, say). It
 * holds the loop as las_loop_hold does, but is counted apart, so that a shutdown can wait
 * for it (asyncio's shutdown_default_executor) and not for holds that may never end. */
void las_loop_work_begin(las_loop_t *loop);
void las_loop_work_end(las_loop_t *loop);
size_t las_loop_work_count(las_loop_t *loop);

/* Any thread. Runs cb(loop, arg, 0) on the loop thread, in order per producer, exactly
 * once, however libuv coalesces wakeups. Returns 0, or LAS_ECLOSED/LAS_ENOMEM, in which
 * case cb is never called. Posts still queued when the loop closes get cb(loop, arg,
 * LAS_ECANCELED) on the closing thread, so that arg can be freed. */
typedef void (*las_post_cb)(las_loop_t *loop, void *arg, int status);
int las_loop_post(las_loop_t *loop, las_post_cb cb, void *arg);

/* Debug mode: when on, every ready callback is timed, and one that runs longer than the
 * threshold is reported through the slow hook: `task` is the task whose step ran inside
 * that callback, or NULL for a plain callback; `fn` is the callback that ran (duration in
 * seconds). */
typedef void (*las_slow_cb)(las_loop_t *loop, las_task_t *task, las_cb fn, double seconds);
void las_loop_set_debug(las_loop_t *loop, int on, double threshold, las_slow_cb hook);

/* -------------------------------------------------------------------------------- timers */

/* Timers live in the loop's heap: O(log n) start and stop, no libuv handle each. The memory
 * is the caller's, from las_timer_new; las_timer_free stops it first and accepts NULL. When
 * the timer is due, cb(a, b) is moved into the ready queue. */
las_timer_t *las_timer_new(las_loop_t *loop);
int las_timer_start(las_timer_t *t, double when, las_cb cb, void *a, void *b);
void las_timer_stop(las_timer_t *t);
int las_timer_active(const las_timer_t *t);
double las_timer_when(const las_timer_t *t);
void las_timer_free(las_timer_t *t);

/* ------------------------------------------------------------------------------- futures */

typedef enum { LAS_PENDING = 0, LAS_DONE, LAS_FAILED, LAS_CANCELLED } las_state_t;

typedef enum { LAS_VNIL = 0, LAS_VBOOL, LAS_VINT, LAS_VNUM, LAS_VSTR, LAS_VPTR } las_vtype_t;

/* A language-neutral value, for futures resolved from C. Strings are copied in. */
typedef struct {
  las_vtype_t type;
  union {
    int b;
    int64_t i;
    double n;
    void *p;
    struct { const char *ptr; size_t len; } s;
  } u;
} las_value_t;

/* Futures are reference counted (atomically: the count may be dropped on any thread once
 * the loop is closed). A new future has one reference, the caller's. */
las_future_t *las_future_new(las_loop_t *loop);
void las_future_ref(las_future_t *f);
void las_future_unref(las_future_t *f);
las_loop_t *las_future_loop(const las_future_t *f);
las_state_t las_future_state(const las_future_t *f);
int las_future_is_task(const las_future_t *f);

/* Completes the future with C values (copied), a C error message, or cancellation. The
 * done callbacks are scheduled with call_soon, never called here. LAS_ESTATE if done;
 * LAS_EINVAL for a task outside its own step (a task's step sets its outcome; others
 * cancel it) and for a string value with a NULL pointer and a nonzero length. */
int las_future_set_values(las_future_t *f, const las_value_t *vals, int n);
int las_future_set_error(las_future_t *f, const char *message);
/* Returns 1 if the future was pending and is now cancelled (for a task: if cancellation was
 * requested), 0 if it was already done. */
int las_future_cancel(las_future_t *f);
/* Marks the future complete with a state whose values the embedding layer keeps itself
 * (the Lua binding stores Lua values next to its own object). */
int las_future_complete(las_future_t *f, las_state_t state);
/* The C values or error message of a future completed from C; n is -1 when the values are
 * kept by the embedding layer. */
int las_future_values(const las_future_t *f, const las_value_t **vals);
const char *las_future_error_message(const las_future_t *f);

/* Any thread: complete the future on its loop's thread. On success the call consumes one
 * reference the caller owns. LAS_ECLOSED when the loop is closed (the reference is kept);
 * LAS_EINVAL as for las_future_set_values (a task may only be cancelled this way). */
int las_future_post_values(las_future_t *f, const las_value_t *vals, int n);
int las_future_post_error(las_future_t *f, const char *message);
int las_future_post_cancel(las_future_t *f);
/* Holds the loop alive until the future completes (a future a foreign thread will finish). */
void las_future_hold_loop(las_future_t *f);

/* Done callbacks: cb(a, future) is scheduled with call_soon when the future completes (at
 * once, through the queue, if it already has). */
int las_future_add_callback(las_future_t *f, las_cb cb, void *a);
/* Removes every registration of (cb, a); returns how many. */
int las_future_remove_callback(las_future_t *f, las_cb cb, void *a);
/* Visits the registered callbacks (the binding uses it to match its own). */
int las_future_callback_count(const las_future_t *f);
int las_future_callback_at(const las_future_t *f, int i, las_cb *cb, void **a);

/* --------------------------------------------------------------------------------- tasks */

/* A task is a future driven by a step function that the loop calls through the ready
 * queue. The step runs the task's code until it suspends on a future, a timer or a bare
 * yield, or finishes; the embedding layer decides what "code" is (a Lua coroutine). */
typedef void (*las_step_cb)(las_task_t *task, void *ud);

las_task_t *las_task_new(las_loop_t *loop, las_step_cb step, void *ud);
las_future_t *las_task_future(las_task_t *t);
las_task_t *las_task_from_future(las_future_t *f);
void *las_task_data(const las_task_t *t);
/* Schedules the first step (or the next one after a bare yield). */
int las_task_schedule(las_task_t *t);
/* Suspends the task until f completes: its next step is f's done callback itself (no extra
 * iteration). If a cancellation was requested meanwhile, f is cancelled at once. LAS_EINVAL
 * for the task's own future or a future of another loop. */
int las_task_wait(las_task_t *t, las_future_t *f);
/* Suspends the task on something the embedding layer tracks itself (a future kept entirely
 * in Lua, say) until las_task_wake. Cancelling a task suspended this way calls the loop's
 * cancel hook, which should cancel what the task waits for (and so wake it) and return 1, or
 * return 0 to leave the cancellation for the next suspension. */
int las_task_wait_external(las_task_t *t);
/* Schedules the step of a task suspended with las_task_wait_external; the step runs in the
 * next pass, as a done callback would. Returns LAS_ESTATE if the task was not waiting so. */
int las_task_wake(las_task_t *t);
typedef int (*las_cancel_hook)(las_task_t *t, void *loop_data);
void las_loop_set_cancel_hook(las_loop_t *loop, las_cancel_hook hook);
las_cancel_hook las_loop_get_cancel_hook(las_loop_t *loop);
/* Suspends the task until loop time `when`, without any future. */
int las_task_sleep_until(las_task_t *t, double when);
/* Requests cancellation: the awaited future is cancelled, or the timer/yield cut short, and
 * the step sees las_task_take_cancel() true. Returns 0 if the task is already done. */
int las_task_cancel(las_task_t *t);
/* Asyncio 3.11's cancelling()/uncancel(): the count of pending cancellation requests. */
int las_task_cancelling(const las_task_t *t);
int las_task_uncancel(las_task_t *t);
/* Inside the step: nonzero (and cleared) if the step must deliver a cancellation. */
int las_task_take_cancel(las_task_t *t);
/* The future the task is suspended on, or was woken by (during that step only; NULL after a
 * timer, a yield or an external wait). Borrowed. */
las_future_t *las_task_waited(const las_task_t *t);
/* Nonzero while the task is suspended on something (so a step that returned without
 * suspending and without finishing was a bare yield). */
int las_task_suspended(const las_task_t *t);
/* The step function the task was made with (an embedding layer tells its own tasks by it). */
las_step_cb las_task_step(const las_task_t *t);
/* The running task of the loop, or NULL. */
las_task_t *las_loop_current_task(las_loop_t *loop);
/* Number of tasks that are not done yet. */
size_t las_loop_task_count(las_loop_t *loop);
/* Nonzero inside las_loop_run or one of the loop's callbacks, posted ones included (where
 * it cannot be closed). */
int las_loop_in_callback(las_loop_t *loop);
/* Nonzero while the loop itself has something that can make progress: ready callbacks,
 * timers or holds (las_loop_alive also counts the uv loop's handles, the host's included). */
int las_loop_has_work(las_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif
