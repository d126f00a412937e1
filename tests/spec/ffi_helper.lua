-- Shared by the ffi_*_spec.lua files: loads lasync.ffi, declares the fixture library
-- (tests/fixtures/ffi_fixture.c) and finds its build output next to the module.
local ffi = require "lasync.ffi"

local function fixture_path()
  local env = os.getenv("LASYNC_FFI_FIXTURE")
  if env then return env end
  local so = package.searchpath("lasync.ffi", package.cpath)
  assert(so, "lasync.ffi is not on package.cpath")
  local build = so:gsub("/lua/lasync/ffi%.so$", "")
  return build .. "/tests/fixtures/liblasync_ffi_fixture.so"
end

ffi.cdef [[
struct fx_point { int x, y; double w; };
struct fx_rect { struct fx_point a, b; char tag[6]; };
union fx_num { int32_t i; float f; };
typedef void (*fx_done_cb)(void *ud, int value, const char *msg);

extern int fx_counter;
extern const char *fx_name;
extern double fx_values[4];
int fx_add(int a, int b);
int64_t fx_add64(int64_t a, int64_t b);
uint64_t fx_umax(void);
int8_t fx_neg8(void);
uint16_t fx_u16(uint16_t x);
bool fx_not(bool b);
double fx_scale(double x, float y);
float fx_halff(float x);
struct fx_point fx_make_point(int x, int y);
double fx_point_sum(struct fx_point p);
struct fx_rect fx_make_rect(int s);
int fx_sum_points(const struct fx_point *p, int n);
const char *fx_greet(void);
size_t fx_strlen(const char *s);
void *fx_null(void);
int fx_is_null(const void *p);
int fx_set_errno(int e);
void fx_fill(unsigned char *buf, size_t n, int c);
int fx_sum_var(int n, ...);
double fx_sum_doubles(int n, ...);
int fx_union_bits(union fx_num u);

int fx_apply(int (*f)(int, int), int a, int b);
void fx_call_n(void (*f)(int), int n);
double fx_apply_point(double (*f)(struct fx_point), int x);
void fx_store(void (*f)(int));
void fx_fire(int v);

int fx_start(int delay_ms, int value, fx_done_cb cb, void *ud);
int fx_start_twice(int delay_ms, int value, fx_done_cb cb, void *ud);
int fx_start_never(int value, fx_done_cb cb, void *ud);
int fx_start_fail(int value, fx_done_cb cb, void *ud);
int fx_start_sync(int value, fx_done_cb cb, void *ud);
int fx_thread_ask(int (*f)(int), int x, int (*status)(void), int *st);
int fx_async_ask(int (*f)(int), int x, fx_done_cb done, void *ud);
int fx_sleep_ms(int ms);
long fx_busy_sum(const int *v, int n, int ms);
int fx_strdup_len(const char *s, int ms);
void fx_sleep_then_set(int ms, int *flag);
int fx_spam(int nthreads, int per_thread, void (*cb)(void *, int), void *ud);
void fx_spam_join(void);
void fx_call_late(int (*cb)(int), int (*status)(void));
void fx_pool_start(int n);
void fx_pool_stop(void);
int fx_pool_submit(int value, fx_done_cb cb, void *ud);
void fx_fire_all(fx_done_cb *cbs, int n, int nthreads);
]]

local path = fixture_path()
return { ffi = ffi, C = ffi.load(path), path = path }
