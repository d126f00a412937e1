/* ffi_lua.h - what the Lua-facing files of the FFI bridge share: the module state, the
 * cdata layout, conversions between Lua values and C objects, and the callback and thread
 * bridge entry points (ffi_cb.c). */
#ifndef LASYNC_FFI_LUA_H
#define LASYNC_FFI_LUA_H

#include "ffi_int.h"

#include <ffi.h>
#include <lua.h>
#include <lauxlib.h>

#define FFI_MAXARGS 64

/* A function type ready for libffi: the cif and its argument types live together, built
 * once per function type and kept in the type database (ctype.ffi). */
typedef struct fcif {
  ffi_cif cif;
  int nparams;
  int fast;                     /* FAST_* return class when the direct path applies, else 0 */
  int nfloat;                   /* floating parameters (0: the integer-only direct call) */
  int ret;                      /* FR_* how the direct path pushes the result */
  uint8_t *cls;                 /* per parameter: FA_* how the direct path converts it */
  int allint;                   /* every parameter FA_I8..FA_I64 and no floating result */
  struct { uint64_t mask, sign; } narrow[6];  /* allint: (v & mask ^ sign) - sign extends */
  ffi_type *atypes[];
} fcif;

enum { FAST_NONE, FAST_VOID, FAST_INT, FAST_DOUBLE, FAST_FLOAT };
/* Parameter classes of the direct path, decided once per function type so that a call
 * does not look at ctypes: fixed-size integers take Lua integers as they are, FA_INTX
 * (pointers, enums, bool) goes through the generic conversion, then the floating ones. */
enum { FA_I8, FA_U8, FA_I16, FA_U16, FA_I32, FA_U32, FA_I64, FA_INTX, FA_DOUBLE, FA_FLOAT };
enum { FR_VOID, FR_I32, FR_U32, FR_I64, FR_DOUBLE, FR_OTHER };

typedef struct cbhub cbhub;

typedef struct fstate {
  ctdb *db;
  const void *mt_cdata, *mt_cdata_gc, *mt_ctype;
  int ref_cdata, ref_cdata_gc, ref_ctype, ref_cache;
  int saved_errno;
  int cb_error_ref;             /* error raised by a callback inside a bridge call */
  int in_call;                  /* depth of bridge calls on the loop thread */
  cbhub *hub;                   /* shared with foreign threads and closures */
  _Atomic long *busy;           /* the hub's "loop thread is in a C call" word */
  lua_State *cbL;               /* thread that runs callbacks and deliveries */
  int ref_cbL;
  int ref_temps, ntemps;        /* callbacks made for the arguments of running calls */
  long seq;                     /* numbers the outermost bridge calls */
  int ref_cancel;                /* Future.cancel, looked up once, for `never` */
  int ref_anchors, anext, nafree, capafree;  /* one-shot anchors: table slots, C free list */
  const void *universe;         /* the registry's address: which Lua state this is */
  int *afree;
} fstate;

/* A C object seen from Lua. `p` points into the inline payload that follows the header
 * (for values created by ffi.new) or into memory owned elsewhere (references to fields,
 * array elements and globals, with the owner kept alive in user value 1). */
typedef struct cdata {
  int ct;
  int flags;
  void *p;
} cdata;

#define CDF_REF 1
#define CDF_FN 4              /* library function: payload caches its cif and state */
#define CDF_VLA 8             /* a [?] array or a struct allocated with a count for its flexible
                               * array member: the count is stored before the payload */
#define CDF_BOUND 16          /* a reference into an object of known size (made through its
                               * fields and elements, not through a pointer): the bytes of
                               * that object from p on follow the header, as an int64_t */

static inline int64_t ffi_cdbound(const cdata *cd) { return ((const int64_t *)(cd + 1))[0]; }

/* The element count of an array cdata, -1 when unknown. A [?] array keeps the type "T[?]"
 * (so that buffers of every size do not each add a type) and its count in front of its
 * payload; a flexible array member reached through a struct of known size has as many
 * elements as fit in the rest of it; one reached through a pointer has no known count. */
static inline int64_t ffi_cdcount(ctdb *db, const cdata *cd) {
  const ctype *c = &db->t[cd->ct];
  if (cd->flags & CDF_VLA) return ((const int64_t *)cd->p)[-2];
  if (c->n < 0 && (cd->flags & CDF_BOUND)) {
    uint32_t esz = db->t[c->base].size;
    return esz ? ffi_cdbound(cd) / esz : 0;
  }
  return c->n;
}

/* The size of the object a cdata holds or designates (flexible parts included). */
size_t ffi_cdsize(ctdb *db, const cdata *cd);
/* The bytes known to be accessible from cd->p: the whole allocation for cdata that own
 * their memory, the rest of the owner for bounded references, -1 when unknown. */
int64_t ffi_cdavail(ctdb *db, const cdata *cd);

enum { TOC_ARG = 1, TOC_CAST = 2, TOC_INIT = 4 };

fstate *ffi_state(lua_State *L);
cdata *ffi_tocdata(lua_State *L, fstate *S, int idx);
cdata *ffi_newcdata(lua_State *L, fstate *S, int ct, size_t size);
void ffi_pushc(lua_State *L, fstate *S, int ct, void *p, int parent);
/* Like ffi_pushc, but copies structs and unions (for memory that is about to go away). */
void ffi_pushval(lua_State *L, fstate *S, int ct, void *p);
void ffi_toc(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int flags);
int ffi_checkct(lua_State *L, fstate *S, int idx, const char *ctx);
const char *ffi_typename(fstate *S, int ct, char *buf, size_t len);
fcif *ffi_getcif(lua_State *L, fstate *S, int ft, const char *ctx);
ffi_type *ffi_typeof(lua_State *L, fstate *S, int ct, const char *ctx);
/* Stores the callable function behind the cdata at idx in *ft and returns its address. */
void *ffi_checkfunc(lua_State *L, fstate *S, int idx, int *ft, const char *ctx);
/* The error raised when a C value does not fit the requested conversion. */
int ffi_converr(lua_State *L, fstate *S, int idx, int ct, const char *ctx);

/* ffi_cb.c */
void ffi_cb_open(lua_State *L, fstate *S);
void ffi_cb_close(fstate *S);
/* Makes a callback for function-pointer type ct from the Lua function at idx and pushes
 * its Lua handle; stores the C entry point in *code. */
void *ffi_cb_new(lua_State *L, fstate *S, int idx, int ct, int temporary);
/* Frees the temporary callbacks made for the arguments of the call just returned. */
void ffi_cb_release_temps(lua_State *L, fstate *S, int mark);
void ffi_cb_loop_enter(fstate *S);
void ffi_cb_loop_leave(fstate *S);
void ffi_cb_functions(lua_State *L, fstate *S, int sidx);
/* The status of the last callback call made on the calling thread (see ffi_cb.c). */
int lasync_ffi_last_status(void);

#endif
