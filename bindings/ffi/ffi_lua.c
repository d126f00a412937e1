/* ffi_lua.c - the Lua side of the FFI bridge: cdata (new, cast, field and index access,
 * pointer arithmetic), conversions between Lua values and C objects, library loading and
 * calls through libffi. Callbacks and the thread bridge are in ffi_cb.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ffi_lua.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CD_HDR ((sizeof(cdata) + 15) & ~(size_t)15)

fstate *ffi_state(lua_State *L) { return (fstate *)lua_touserdata(L, lua_upvalueindex(1)); }

const char *ffi_typename(fstate *S, int ct, char *buf, size_t len) {
  ct_tostring(S->db, ct, NULL, buf, len);
  return buf;
}

/* A cdata is any userdata with one of the two cdata metatables; comparing the metatable
 * pointer avoids a registry look-up by name on every access. */
cdata *ffi_tocdata(lua_State *L, fstate *S, int idx) {
  cdata *cd = lua_touserdata(L, idx);
  if (!cd || lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return (mt == S->mt_cdata || mt == S->mt_cdata_gc) ? cd : NULL;
}

static cdata *checkcd(lua_State *L, fstate *S, int idx, const char *ctx) {
  cdata *cd = ffi_tocdata(L, S, idx);
  if (!cd) luaL_error(L, "%s: cdata expected, got %s", ctx, luaL_typename(L, idx));
  return cd;
}

/* New cdata with an inline, zeroed payload of `size` bytes, `pre` bytes after the header
 * (a multiple of 16), aligned for any C type up to 16 bytes and for its own type beyond
 * (an aligned(64) struct gets 64). Two user values: the owner of referenced memory, and
 * the gc finalizer. */
static cdata *newcdata(lua_State *L, fstate *S, int ct, size_t size, size_t pre) {
  size_t align = CT(S->db, ct)->align, extra = align > 16 ? align : 8;
  if (align < 16) align = 16;
  cdata *cd = lua_newuserdatauv(L, CD_HDR + pre + size + extra, 2);
  cd->ct = ct;
  cd->flags = 0;
  uintptr_t end = (uintptr_t)cd + CD_HDR + pre + size + extra;
  uintptr_t p = ((uintptr_t)cd + CD_HDR + pre + align - 1) & ~(uintptr_t)(align - 1);
  if (p + size > end) p = (uintptr_t)cd + CD_HDR + pre;  /* Lua's blocks are 16-aligned then */
  cd->p = (void *)p;
  memset(cd->p, 0, size);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cdata);
  lua_setmetatable(L, -2);
  return cd;
}

cdata *ffi_newcdata(lua_State *L, fstate *S, int ct, size_t size) {
  return newcdata(L, S, ct, size, 0);
}

size_t ffi_cdsize(ctdb *db, const cdata *cd) {
  const ctype *c = &db->t[cd->ct];
  if (cd->flags & CDF_VLA) {
    uint32_t off = 0;
    int fa = c->kind == CT_ARRAY ? cd->ct : ct_flexarray(db, cd->ct, &off);
    if (fa < 0) return c->size;
    size_t n = (size_t)ffi_cdcount(db, cd) * db->t[db->t[fa].base].size;
    if (c->kind == CT_ARRAY) return n;
    return off + n > c->size ? off + n : c->size;
  }
  if (c->kind == CT_ARRAY && c->n < 0 && (cd->flags & CDF_BOUND))
    return (size_t)ffi_cdcount(db, cd) * db->t[c->base].size;
  return c->size;
}

int64_t ffi_cdavail(ctdb *db, const cdata *cd) {
  if (!(cd->flags & CDF_REF)) return (int64_t)ffi_cdsize(db, cd);
  if (cd->flags & CDF_BOUND) return ffi_cdbound(cd);
  return -1;
}

/* A reference to C memory owned by someone else; the owner (if any) stays alive. `avail`
 * is the number of bytes of the owner from p on when known (else -1): it bounds a
 * flexible array member reached through the reference. */
static cdata *newref(lua_State *L, fstate *S, int ct, void *p, int owner, int64_t avail) {
  if (owner) owner = lua_absindex(L, owner);
  cdata *cd = lua_newuserdatauv(L, sizeof(cdata) + (avail >= 0 ? sizeof(int64_t) : 0), 2);
  cd->ct = ct;
  cd->flags = CDF_REF;
  cd->p = p;
  if (avail >= 0) { cd->flags |= CDF_BOUND; ((int64_t *)(cd + 1))[0] = avail; }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cdata);
  lua_setmetatable(L, -2);
  if (owner) { lua_pushvalue(L, owner); lua_setiuservalue(L, -2, 1); }
  return cd;
}

static void pushptr(lua_State *L, fstate *S, int ct, void *v) {
  cdata *cd = ffi_newcdata(L, S, ct, sizeof(void *));
  *(void **)cd->p = v;
}

/* Pushes the Lua value of the C object of type ct at p. Numbers become Lua numbers
 * (integers exactly, uint64 keeping its bits), NULL pointers become nil, aggregates
 * become references kept alive through `parent` (0 when the memory is static). */
void ffi_pushc(lua_State *L, fstate *S, int ct, void *p, int parent) {
  ctype *c = CT(S->db, ct);
  switch (c->kind) {
  case CT_BOOL: lua_pushboolean(L, *(uint8_t *)p != 0); return;
  case CT_INT: case CT_ENUM: {
    int u = ct_isunsigned(S->db, c);
    /* memcpy: a member of a packed struct need not be aligned */
    switch (c->size) {
    case 1: lua_pushinteger(L, u ? *(uint8_t *)p : *(int8_t *)p); return;
    case 2: { uint16_t v; memcpy(&v, p, 2); lua_pushinteger(L, u ? v : (int16_t)v); return; }
    case 4: { uint32_t v; memcpy(&v, p, 4); lua_pushinteger(L, u ? (lua_Integer)v : (int32_t)v); return; }
    default: { int64_t v; memcpy(&v, p, 8); lua_pushinteger(L, (lua_Integer)v); return; }
    }
  }
  case CT_FLOAT:
    if (c->size == 4) { float f; memcpy(&f, p, sizeof f); lua_pushnumber(L, f); }
    else if (c->size == 8) { double d; memcpy(&d, p, sizeof d); lua_pushnumber(L, d); }
    else { long double d; memcpy(&d, p, sizeof d); lua_pushnumber(L, (lua_Number)d); }
    return;
  case CT_PTR: {
    void *v;
    memcpy(&v, p, sizeof v);
    if (!v) lua_pushnil(L);
    else pushptr(L, S, ct_unqual(S->db, ct), v);
    return;
  }
  case CT_VOID: lua_pushnil(L); return;
  default:
    newref(L, S, ct, p, parent, -1);
  }
}

/* Pushes the Lua value of a C object that does not outlive the caller (a callback's
 * argument, a copied message): like ffi_pushc, but a struct or union is copied into a new
 * cdata that Lua owns instead of referenced. */
void ffi_pushval(lua_State *L, fstate *S, int ct, void *p) {
  ctype *c = CT(S->db, ct);
  if (c->kind == CT_STRUCT || c->kind == CT_UNION) {
    cdata *cd = ffi_newcdata(L, S, ct_unqual(S->db, ct), c->size);
    memcpy(cd->p, p, c->size);
  } else ffi_pushc(L, S, ct, p, 0);
}

int ffi_converr(lua_State *L, fstate *S, int idx, int ct, const char *ctx) {
  char a[160], b[160];
  cdata *cd = ffi_tocdata(L, S, idx);
  if (cd) ffi_typename(S, cd->ct, b, sizeof b);
  else snprintf(b, sizeof b, "%s", luaL_typename(L, idx));
  return luaL_error(L, "%s: cannot convert '%s' to '%s'", ctx, b, ffi_typename(S, ct, a, sizeof a));
}

/* Reads a Lua number or boolean or a scalar cdata as a 64-bit integer; floats are
 * truncated as a C cast would, but NaN and values outside 64 bits are an error. */
static int toint64(lua_State *L, fstate *S, int idx, int64_t *out, int *isnum, double *d) {
  *isnum = 0;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) { *out = lua_tointeger(L, idx); return 1; }
    *d = lua_tonumber(L, idx); *isnum = 1;
    return 1;
  case LUA_TBOOLEAN: *out = lua_toboolean(L, idx); return 1;
  case LUA_TUSERDATA: {
    cdata *cd = ffi_tocdata(L, S, idx);
    if (!cd) return 0;
    ctype *c = CT(S->db, cd->ct);
    if (ct_isint(c) || c->kind == CT_FLOAT) {
      ffi_pushc(L, S, cd->ct, cd->p, 0);
      int r = toint64(L, S, lua_gettop(L), out, isnum, d);
      lua_pop(L, 1);
      return r;
    }
    return 0;
  }
  default: return 0;
  }
}

/* Stores go through memcpy: dst may be a member of a packed struct. */
static void store_int(void *dst, int size, int64_t v) {
  switch (size) {
  case 1: *(int8_t *)dst = (int8_t)v; break;
  case 2: { int16_t x = (int16_t)v; memcpy(dst, &x, 2); break; }
  case 4: { int32_t x = (int32_t)v; memcpy(dst, &x, 4); break; }
  default: memcpy(dst, &v, 8);
  }
}

static int64_t enum_value(lua_State *L, fstate *S, int idx, int ct, const char *ctx) {
  const char *name = lua_tostring(L, idx);
  csym *s = ct_findsym(S->db, name);
  if (!s || s->kind != SYM_CONST || ct_unqual(S->db, s->type) != ct_unqual(S->db, ct))
    luaL_error(L, "%s: '%s' is not a constant of this enum", ctx, name);
  return s->value;
}

static void init_aggregate(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int64_t count);
static int init_fields(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int64_t count, int *pos);

/* Converts a Lua value to a pointer for type ct: nil, cdata pointers, arrays, structs and
 * functions (by address), light userdata, strings for const char pointers, and Lua
 * functions as callbacks when the caller allows it. */
static void *toptr(lua_State *L, fstate *S, int idx, int ct, const char *ctx, int flags) {
  ctdb *db = S->db;
  ctype *c = CT(db, ct);
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return NULL;
  case LUA_TLIGHTUSERDATA: return lua_touserdata(L, idx);
  case LUA_TSTRING: {
    ctype *t = CT(db, c->base);
    if ((t->flags & CTF_CONST) && (t->kind == CT_VOID || (t->kind == CT_INT && t->size == 1)))
      return (void *)lua_tostring(L, idx);
    if (flags & TOC_CAST) return (void *)lua_tostring(L, idx);
    break;
  }
  case LUA_TNUMBER:
    if (flags & TOC_CAST) {
      int64_t v; int isn; double d;
      toint64(L, S, idx, &v, &isn, &d);
      return (void *)(intptr_t)(isn ? (int64_t)d : v);
    }
    break;
  case LUA_TFUNCTION:
    if (CT(db, c->base)->kind == CT_FUNC && (flags & (TOC_CAST | TOC_ARG))) {
      void *code = ffi_cb_new(L, S, idx, ct, !(flags & TOC_CAST));
      lua_pop(L, 1);  /* the handle is anchored by the callback list */
      return code;
    }
    break;
  case LUA_TUSERDATA: {
    cdata *cd = ffi_tocdata(L, S, idx);
    if (!cd) break;
    ctype *s = CT(db, cd->ct);
    int src;
    void *v;
    if (s->kind == CT_PTR) { src = s->base; v = *(void **)cd->p; }
    else if (s->kind == CT_FUNC) { src = cd->ct; v = *(void **)cd->p; }
    else if (s->kind == CT_ARRAY) { src = s->base; v = cd->p; }
    else if (s->kind == CT_STRUCT || s->kind == CT_UNION) { src = cd->ct; v = cd->p; }
    else if ((flags & TOC_CAST) && ct_isint(s)) {
      int64_t iv; int isn; double d;
      toint64(L, S, idx, &iv, &isn, &d);
      return (void *)(intptr_t)iv;
    } else break;
    if ((flags & TOC_CAST) || ct_compatible_ptr(db, c->base, src)) return v;
    break;
  }
  default: break;
  }
  ffi_converr(L, S, idx, ct, ctx);
  return NULL;
}

void ffi_toc(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int flags) {
  ctype *c = CT(S->db, ct);
  int64_t v = 0; int isnum; double d = 0;
  switch (c->kind) {
  case CT_INT: case CT_ENUM: case CT_BOOL:
    if (c->kind == CT_ENUM && lua_type(L, idx) == LUA_TSTRING) v = enum_value(L, S, idx, ct, ctx);
    else if (!toint64(L, S, idx, &v, &isnum, &d)) {
      if ((flags & TOC_CAST) && ffi_tocdata(L, S, idx)) v = (int64_t)(intptr_t)toptr(L, S, idx, S->db->t_voidp, ctx, TOC_CAST);
      else ffi_converr(L, S, idx, ct, ctx);
    } else if (isnum) {
      if (c->kind == CT_BOOL) v = d != 0;
      else if (d != d || d >= 18446744073709551616.0 || d < -9223372036854775808.0)
        luaL_error(L, "%s: number %f out of range for an integer type", ctx, d);
      else v = d >= 9223372036854775808.0 ? (int64_t)(uint64_t)d : (int64_t)d;
    }
    if (c->kind == CT_BOOL) v = v != 0;
    store_int(dst, (int)c->size, v);
    return;
  case CT_FLOAT: {
    if (lua_type(L, idx) == LUA_TNUMBER) d = lua_tonumber(L, idx);
    else if (toint64(L, S, idx, &v, &isnum, &d)) { if (!isnum) d = (double)v; }
    else ffi_converr(L, S, idx, ct, ctx);
    if (c->size == 4) { float f = (float)d; memcpy(dst, &f, sizeof f); }
    else if (c->size == 8) memcpy(dst, &d, sizeof d);
    else { long double x = d; memcpy(dst, &x, sizeof x); }
    return;
  }
  case CT_PTR: {
    void *pv = toptr(L, S, idx, ct, ctx, flags);
    memcpy(dst, &pv, sizeof pv);
    return;
  }
  case CT_STRUCT: case CT_UNION: case CT_ARRAY: {
    cdata *cd = ffi_tocdata(L, S, idx);
    if (cd && ct_unqual(S->db, cd->ct) == ct_unqual(S->db, ct)) { memcpy(dst, cd->p, c->size); return; }
    if (cd && c->kind == CT_ARRAY && CT(S->db, cd->ct)->kind == CT_ARRAY &&
        ct_unqual(S->db, CT(S->db, cd->ct)->base) == ct_unqual(S->db, c->base)) {
      size_t n = ffi_cdsize(S->db, cd) < c->size ? ffi_cdsize(S->db, cd) : c->size;
      memcpy(dst, cd->p, n);
      return;
    }
    if ((flags & TOC_INIT) || lua_istable(L, idx) || lua_type(L, idx) == LUA_TSTRING) {
      init_aggregate(L, S, idx, ct, dst, ctx, -1);
      return;
    }
    ffi_converr(L, S, idx, ct, ctx);
    return;
  }
  default:
    luaL_error(L, "%s: cannot convert to '%s'", ctx, ffi_typename(S, ct, (char[160]){0}, 160));
  }
}

static int64_t flexcount(ctdb *db, int arr, int64_t bytes) {
  uint32_t esz = db->t[db->t[arr].base].size;
  return bytes <= 0 || !esz ? 0 : bytes / esz;
}

static void too_many(lua_State *L, fstate *S, int ct, const char *ctx) {
  luaL_error(L, "%s: too many initializers for '%s'", ctx, ffi_typename(S, ct, (char[160]){0}, 160));
}

/* Initialises an array or struct from a table ({1, 2, 3}, {x = 1}, or positional), a
 * string (char arrays) or a single value copied into every array element. `count` is the
 * element count of a [?] array, or for a struct the element count of its flexible array
 * member (-1: what fits in the struct's own size). */
static void init_aggregate(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int64_t count) {
  ctype *c = CT(S->db, ct);
  idx = lua_absindex(L, idx);
  if (c->kind == CT_ARRAY) {
    ctype *e = CT(S->db, c->base);
    int64_t n = count >= 0 ? count : c->n < 0 ? 0 : c->n;
    if (lua_type(L, idx) == LUA_TSTRING && e->kind == CT_INT && e->size == 1) {
      size_t len; const char *s = lua_tolstring(L, idx, &len);
      if ((int64_t)len > n) luaL_error(L, "%s: string of length %I too long for '%s'", ctx, (lua_Integer)len,
                                        ffi_typename(S, ct, (char[160]){0}, 160));
      if (len) memcpy(dst, s, len);
      return;
    }
    if (lua_istable(L, idx)) {
      int base = lua_rawgeti(L, idx, 0) != LUA_TNIL ? 0 : 1;
      lua_pop(L, 1);
      int64_t i = 0;
      for (; i < n; i++) {
        if (lua_rawgeti(L, idx, (lua_Integer)(i + base)) == LUA_TNIL) { lua_pop(L, 1); break; }
        ffi_toc(L, S, -1, c->base, (char *)dst + i * e->size, ctx, TOC_INIT);
        lua_pop(L, 1);
      }
      if (i == n) {
        if (lua_rawgeti(L, idx, (lua_Integer)(n + base)) != LUA_TNIL) too_many(L, S, ct, ctx);
        lua_pop(L, 1);
      }
      if (i == 1 && count < 0)  /* LuaJIT repeats a lone element through a fixed-size array */
        for (int64_t j = 1; j < n; j++) memcpy((char *)dst + j * e->size, dst, e->size);
      return;
    }
    for (int64_t i = 0; i < n; i++) ffi_toc(L, S, idx, c->base, (char *)dst + i * e->size, ctx, TOC_INIT);
    return;
  }
  if (!lua_istable(L, idx)) ffi_converr(L, S, idx, ct, ctx);
  int pos = lua_rawgeti(L, idx, 0) != LUA_TNIL ? 0 : 1;  /* 0-based positions, as for arrays */
  lua_pop(L, 1);
  init_fields(L, S, idx, ct, dst, ctx, count, &pos);
  if (lua_rawgeti(L, idx, pos) != LUA_TNIL) too_many(L, S, ct, ctx);
  lua_pop(L, 1);
}

/* The fields of a struct or union from the table at idx, each by its name or else by the
 * next position (*pos); the fields of an anonymous member are the struct's own, as in C.
 * A union takes its first field given. Returns whether any field was set. */
static int init_fields(lua_State *L, fstate *S, int idx, int ct, void *dst, const char *ctx, int64_t count, int *pos) {
  ctype *c = CT(S->db, ct);
  crecord *r = &S->db->r[c->aux];
  uint32_t famoff = 0;
  int fam = ct_flexarray(S->db, ct, &famoff);
  int any = 0;
  for (int i = 0; i < r->nfields; i++) {
    cfield *f = &r->fields[i];
    if (!f->name) {
      if (init_fields(L, S, idx, f->type, (char *)dst + f->offset, ctx, -1, pos)) {
        any = 1;
        if (c->kind == CT_UNION) break;
      }
      continue;
    }
    if (lua_getfield(L, idx, f->name) == LUA_TNIL) {
      lua_pop(L, 1);
      if (lua_rawgeti(L, idx, *pos) == LUA_TNIL) { lua_pop(L, 1); continue; }
      (*pos)++;
    }
    if (f->type == fam && i == r->nfields - 1) {  /* the flexible array: as many as were allocated */
      int64_t n = count >= 0 ? count : flexcount(S->db, fam, (int64_t)c->size - famoff);
      cdata *src = ffi_tocdata(L, S, -1);
      if (src && CT(S->db, src->ct)->kind == CT_ARRAY &&
          ct_unqual(S->db, CT(S->db, src->ct)->base) == ct_unqual(S->db, CT(S->db, fam)->base)) {
        size_t want = (size_t)n * CT(S->db, CT(S->db, fam)->base)->size, have = ffi_cdsize(S->db, src);
        if (have > want) too_many(L, S, fam, ctx);
        if (have) memcpy((char *)dst + f->offset, src->p, have);
      } else init_aggregate(L, S, -1, fam, (char *)dst + f->offset, ctx, n);
    } else ffi_toc(L, S, -1, f->type, (char *)dst + f->offset, ctx, TOC_INIT);
    lua_pop(L, 1);
    any = 1;
    if (c->kind == CT_UNION) break;
  }
  return any;
}

/* Resolves a type argument: a C type string (parsed once, then cached), a ctype object or
 * a cdata (its type). */
int ffi_checkct(lua_State *L, fstate *S, int idx, const char *ctx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cache);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNUMBER) {
      int ct = (int)lua_tointeger(L, -1);
      lua_pop(L, 2);
      return ct;
    }
    lua_pop(L, 1);
    char err[256];
    int vla;
    int ct = cparse_type(S->db, lua_tostring(L, idx), NULL, 0, &vla, err, sizeof err);
    if (ct < 0) luaL_error(L, "%s: %s", ctx, err);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, ct);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return ct;
  }
  int *box = lua_touserdata(L, idx);
  if (box && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == S->mt_ctype) return *box;
    if (mt == S->mt_cdata || mt == S->mt_cdata_gc) return ((cdata *)box)->ct;
  }
  luaL_error(L, "%s: C type expected, got %s", ctx, luaL_typename(L, idx));
  return -1;
}

static void pushctype(lua_State *L, fstate *S, int ct) {
  int *box = lua_newuserdatauv(L, sizeof(int), 0);
  *box = ct;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_ctype);
  lua_setmetatable(L, -2);
}

static size_t checksize(lua_State *L, fstate *S, int ct, const char *ctx) {
  ctype *c = CT(S->db, ct);
  if (c->kind == CT_FUNC || c->kind == CT_VOID ||
      ((c->kind == CT_STRUCT || c->kind == CT_UNION) && !S->db->r[c->aux].complete))
    luaL_error(L, "%s: '%s' has no size", ctx, ffi_typename(S, ct, (char[160]){0}, 160));
  return c->size;
}

/* The size of a [?] array of n elements, or of a struct whose flexible array member
 * (at offset off) has n elements; raises for a count that is negative or too large. */
static size_t vsize(lua_State *L, fstate *S, int arr, uint32_t off, size_t fixed, lua_Integer n, const char *ctx) {
  size_t esz = CT(S->db, CT(S->db, arr)->base)->size;
  if (n < 0 || (esz && (uint64_t)n > (CT_MAXSIZE - off) / esz))
    luaL_error(L, "%s: bad array size %I", ctx, (lua_Integer)n);
  size_t sz = off + (size_t)n * esz;
  return sz > fixed ? sz : fixed;
}

/* ffi.new(ct [, n] [, init...]): a zeroed object owned by Lua's GC, then initialised. A
 * "T[?]" array takes its count first; so does a struct ending in a flexible array member
 * when the first argument after the type is a number (a variable-length struct). */
static int f_new(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct = ffi_checkct(L, S, 1, "ffi.new");
  ctype *c = CT(S->db, ct);
  int first = 2, fam = -1;
  int64_t count = -1;
  size_t size;
  if (c->kind == CT_ARRAY && (c->flags & CTF_VLA)) {
    count = luaL_checkinteger(L, 2);
    size = vsize(L, S, ct, 0, 0, count, "ffi.new");
    first = 3;
  } else if (c->kind == CT_ARRAY && c->n < 0)
    return luaL_error(L, "ffi.new: array size of '%s' unknown (use '[?]')", ffi_typename(S, ct, (char[160]){0}, 160));
  else {
    uint32_t off = 0;
    size = checksize(L, S, ct, "ffi.new");
    fam = ct_flexarray(S->db, ct, &off);
    if (fam >= 0 && lua_type(L, 2) == LUA_TNUMBER) {
      count = luaL_checkinteger(L, 2);
      size = vsize(L, S, fam, off, size, count, "ffi.new");
      first = 3;
    }
  }
  int top = lua_gettop(L);
  cdata *cd;
  if (count >= 0) {  /* the count goes in a 16-byte prefix, keeping the payload aligned */
    cd = newcdata(L, S, ct, size, 16);
    cd->flags |= CDF_VLA;
    ((int64_t *)cd->p)[-2] = count;
  } else cd = ffi_newcdata(L, S, ct, size);
  int nv = top - first + 1;
  if (nv <= 0) return 1;
  int scalar = c->kind != CT_ARRAY && c->kind != CT_STRUCT && c->kind != CT_UNION;
  if (nv == 1 && (count < 0 || (fam >= 0 && ffi_tocdata(L, S, first)))) {
    ffi_toc(L, S, first, ct, cd->p, "ffi.new", TOC_INIT);
    return 1;
  }
  if (scalar) return luaL_error(L, "ffi.new: too many initializers for '%s'", ffi_typename(S, ct, (char[160]){0}, 160));
  int src = first;
  if (nv > 1) {  /* several values: array elements or struct fields in order */
    lua_createtable(L, nv, 0);
    for (int i = 0; i < nv; i++) { lua_pushvalue(L, first + i); lua_rawseti(L, -2, i + 1); }
    src = lua_gettop(L);
  }
  if (count >= 0) init_aggregate(L, S, src, ct, cd->p, "ffi.new", count);
  else ffi_toc(L, S, src, ct, cd->p, "ffi.new", TOC_INIT);
  lua_settop(L, top + 1);
  return 1;
}

static int f_cast(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct = ffi_checkct(L, S, 1, "ffi.cast");
  ctype *c = CT(S->db, ct);
  if (c->kind == CT_STRUCT || c->kind == CT_UNION || c->kind == CT_ARRAY || c->kind == CT_VOID || c->kind == CT_FUNC)
    return luaL_error(L, "ffi.cast: cannot cast to '%s' (cast to a pointer instead)", ffi_typename(S, ct, (char[160]){0}, 160));
  luaL_checkany(L, 2);
  if (c->kind == CT_PTR && lua_isfunction(L, 2)) {
    if (CT(S->db, c->base)->kind != CT_FUNC) return ffi_converr(L, S, 2, ct, "ffi.cast");
    ffi_cb_new(L, S, 2, ct, 0);  /* pushes the callback handle, which is also its pointer */
    return 1;
  }
  uint64_t buf[2] = { 0, 0 };
  ffi_toc(L, S, 2, ct, buf, "ffi.cast", TOC_CAST);
  cdata *cd = ffi_newcdata(L, S, ct_unqual(S->db, ct), c->size);
  memcpy(cd->p, buf, c->size);
  if (lua_type(L, 2) == LUA_TSTRING || ffi_tocdata(L, S, 2)) {  /* keep the source alive */
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
  }
  return 1;
}

static int f_sizeof(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *vcd = ffi_tocdata(L, S, 1);
  if (vcd && (vcd->flags & CDF_VLA)) { lua_pushinteger(L, (lua_Integer)ffi_cdsize(S->db, vcd)); return 1; }
  int ct = ffi_checkct(L, S, 1, "ffi.sizeof");
  ctype *c = CT(S->db, ct);
  if (c->kind == CT_ARRAY && (c->flags & CTF_VLA || c->n < 0)) {
    if (lua_isnoneornil(L, 2)) { lua_pushnil(L); return 1; }
    lua_pushinteger(L, (lua_Integer)vsize(L, S, ct, 0, 0, luaL_checkinteger(L, 2), "ffi.sizeof"));
    return 1;
  }
  uint32_t off = 0;
  int fam = ct_flexarray(S->db, ct, &off);
  if (fam >= 0 && !lua_isnoneornil(L, 2)) {  /* a variable-length struct */
    lua_pushinteger(L, (lua_Integer)vsize(L, S, fam, off, c->size, luaL_checkinteger(L, 2), "ffi.sizeof"));
    return 1;
  }
  if (c->kind == CT_FUNC || c->kind == CT_VOID ||
      ((c->kind == CT_STRUCT || c->kind == CT_UNION) && !S->db->r[c->aux].complete)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, c->size);
  return 1;
}

static int f_alignof(lua_State *L) {
  fstate *S = ffi_state(L);
  lua_pushinteger(L, CT(S->db, ffi_checkct(L, S, 1, "ffi.alignof"))->align);
  return 1;
}

static int f_offsetof(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct = ffi_checkct(L, S, 1, "ffi.offsetof");
  const char *name = luaL_checkstring(L, 2);
  uint32_t off = 0;
  if (!ct_findfield(S->db, ct, name, &off)) { lua_pushnil(L); return 1; }
  lua_pushinteger(L, off);
  return 1;
}

static int f_typeof(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct;
  if (lua_type(L, 1) == LUA_TSTRING && lua_gettop(L) > 1) {  /* '$' parameters */
    int n = lua_gettop(L) - 1, ds[16];
    if (n > 16) return luaL_error(L, "ffi.typeof: too many '$' arguments");
    for (int i = 0; i < n; i++) ds[i] = ffi_checkct(L, S, i + 2, "ffi.typeof");
    char err[256]; int vla;
    ct = cparse_type(S->db, lua_tostring(L, 1), ds, n, &vla, err, sizeof err);
    if (ct < 0) return luaL_error(L, "ffi.typeof: %s", err);
  } else ct = ffi_checkct(L, S, 1, "ffi.typeof");
  pushctype(L, S, ct);
  return 1;
}

static int f_istype(lua_State *L) {
  fstate *S = ffi_state(L);
  int ct = ffi_checkct(L, S, 1, "ffi.istype");
  cdata *cd = ffi_tocdata(L, S, 2);
  lua_pushboolean(L, cd && ct_unqual(S->db, cd->ct) == ct_unqual(S->db, ct));
  return 1;
}

/* The address a cdata or light userdata stands for, for string/copy/fill, and in *avail
 * (if given) the bytes known to be there (see ffi_cdavail), -1 behind a pointer. */
static void *addrofn(lua_State *L, fstate *S, int idx, const char *ctx, int64_t *avail) {
  if (avail) *avail = -1;
  if (lua_type(L, idx) == LUA_TLIGHTUSERDATA) return lua_touserdata(L, idx);
  cdata *cd = ffi_tocdata(L, S, idx);
  if (!cd) luaL_error(L, "%s: cdata pointer expected, got %s", ctx, luaL_typename(L, idx));
  ctype *c = CT(S->db, cd->ct);
  if (c->kind == CT_PTR) return *(void **)cd->p;
  if (c->kind == CT_ARRAY || c->kind == CT_STRUCT || c->kind == CT_UNION) {
    if (avail) *avail = ffi_cdavail(S->db, cd);
    return cd->p;
  }
  luaL_error(L, "%s: cannot take the address of a '%s'", ctx, ffi_typename(S, cd->ct, (char[160]){0}, 160));
  return NULL;
}

static void *addrof(lua_State *L, fstate *S, int idx, const char *ctx) {
  return addrofn(L, S, idx, ctx, NULL);
}

/* The destination of ffi.copy and ffi.fill: like addrofn, but never const memory (a Lua
 * string behind a `const char *`, say), which converts to `void *` no more than in calls. */
static void *dstof(lua_State *L, fstate *S, int idx, const char *ctx, int64_t *avail) {
  void *p = addrofn(L, S, idx, ctx, avail);
  cdata *cd = ffi_tocdata(L, S, idx);
  if (cd) {
    ctype *c = CT(S->db, cd->ct);
    ctype *t = c->kind == CT_PTR || c->kind == CT_ARRAY ? CT(S->db, c->base) : c;
    if (t->kind == CT_ARRAY) t = CT(S->db, t->base);  /* a const array is one of const elements */
    if (t->flags & CTF_CONST)
      luaL_error(L, "%s: cannot write through '%s'", ctx, ffi_typename(S, cd->ct, (char[160]){0}, 160));
  }
  return p;
}

static int f_string(lua_State *L) {
  fstate *S = ffi_state(L);
  int64_t avail;
  void *p = addrofn(L, S, 1, "ffi.string", &avail);
  if (lua_isnoneornil(L, 2)) {
    if (!p) return luaL_error(L, "ffi.string: NULL pointer");
    lua_pushstring(L, p);
  } else {
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n < 0) return luaL_error(L, "ffi.string: negative length");
    if (n == 0) { lua_pushliteral(L, ""); return 1; }  /* even from NULL, as LuaJIT */
    if (!p) return luaL_error(L, "ffi.string: NULL pointer");
    if (avail >= 0 && n > avail)
      return luaL_error(L, "ffi.string: length %I beyond the %I bytes of the object", (lua_Integer)n, (lua_Integer)avail);
    lua_pushlstring(L, p, (size_t)n);
  }
  return 1;
}

/* ffi.copy and ffi.fill check the length against what is known of the objects: a cdata
 * array or struct has its size, memory behind a pointer is the caller's business (as in
 * C). A zero length touches nothing, not even a NULL pointer. */
static int f_copy(lua_State *L) {
  fstate *S = ffi_state(L);
  int64_t room, have = -1;
  void *dst = dstof(L, S, 1, "ffi.copy", &room);
  lua_Integer n;
  const void *src;
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    src = lua_tolstring(L, 2, &len);
    n = lua_isnoneornil(L, 3) ? (lua_Integer)len + 1 : luaL_checkinteger(L, 3);
    if (n < 0) return luaL_error(L, "ffi.copy: negative length");
    if ((uint64_t)n > len + 1) return luaL_error(L, "ffi.copy: length %I beyond the string", n);
  } else {
    src = addrofn(L, S, 2, "ffi.copy", &have);
    n = luaL_checkinteger(L, 3);
    if (n < 0) return luaL_error(L, "ffi.copy: negative length");
  }
  if (n == 0) return 0;
  if (!dst || !src) return luaL_error(L, "ffi.copy: NULL pointer");
  if (room >= 0 && n > room)
    return luaL_error(L, "ffi.copy: length %I beyond the %I bytes of the destination", n, (lua_Integer)room);
  if (have >= 0 && n > have)
    return luaL_error(L, "ffi.copy: length %I beyond the %I bytes of the source", n, (lua_Integer)have);
  memmove(dst, src, (size_t)n);
  return 0;
}

static int f_fill(lua_State *L) {
  fstate *S = ffi_state(L);
  int64_t room;
  void *dst = dstof(L, S, 1, "ffi.fill", &room);
  lua_Integer n = luaL_checkinteger(L, 2);
  int c = (int)luaL_optinteger(L, 3, 0);
  if (n < 0) return luaL_error(L, "ffi.fill: negative length");
  if (n == 0) return 0;
  if (!dst) return luaL_error(L, "ffi.fill: NULL pointer");
  if (room >= 0 && n > room)
    return luaL_error(L, "ffi.fill: length %I beyond the %I bytes of the destination", n, (lua_Integer)room);
  memset(dst, c, (size_t)n);
  return 0;
}

/* ffi.gc(cd, fn): switches the cdata to the metatable that has __gc (objects are only
 * finalised when their metatable had __gc when it was set) and stores fn: a Lua function,
 * or a C function or function pointer cdata (ffi.gc(p, ffi.C.free)), called with cd. */
static int f_gc(lua_State *L) {
  fstate *S = ffi_state(L);
  checkcd(L, S, 1, "ffi.gc");
  if (!lua_isnoneornil(L, 2) && !lua_isfunction(L, 2)) {
    cdata *fn = ffi_tocdata(L, S, 2);
    ctype *c = fn ? CT(S->db, fn->ct) : NULL;
    if (!c) return luaL_error(L, "ffi.gc: function or C function expected, got %s", luaL_typename(L, 2));
    if (!(c->kind == CT_FUNC || (c->kind == CT_PTR && CT(S->db, c->base)->kind == CT_FUNC)))
      return luaL_error(L, "ffi.gc: function or C function expected, got '%s'", ffi_typename(S, fn->ct, (char[160]){0}, 160));
  }
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cdata_gc);
  lua_setmetatable(L, 1);
  return 1;
}

static int cd_gc(lua_State *L) {
  int t = lua_getiuservalue(L, 1, 2);
  if (t == LUA_TFUNCTION || t == LUA_TUSERDATA) {  /* a C function is called through __call */
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 2);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
  }
  return 0;
}

static int f_errno(lua_State *L) {
  fstate *S = ffi_state(L);
  int old = S->saved_errno;
  if (!lua_isnoneornil(L, 1)) { S->saved_errno = (int)luaL_checkinteger(L, 1); errno = S->saved_errno; }
  lua_pushinteger(L, old);
  return 1;
}

static int f_tonumber(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = ffi_tocdata(L, S, 1);
  if (!cd) {  /* like tonumber: numbers and numeric strings convert, anything else is nil */
    if (lua_type(L, 1) == LUA_TNUMBER) lua_pushvalue(L, 1);
    else if (lua_type(L, 1) != LUA_TSTRING || !lua_stringtonumber(L, lua_tostring(L, 1))) lua_pushnil(L);
    return 1;
  }
  ctype *c = CT(S->db, cd->ct);
  if (c->kind == CT_PTR) lua_pushinteger(L, (lua_Integer)(intptr_t) * (void **)cd->p);
  else if (ct_isint(c) || c->kind == CT_FLOAT) ffi_pushc(L, S, cd->ct, cd->p, 0);
  else lua_pushnil(L);
  return 1;
}

static int f_isnull(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = ffi_tocdata(L, S, 1);
  if (lua_isnil(L, 1)) lua_pushboolean(L, 1);
  else if (lua_type(L, 1) == LUA_TLIGHTUSERDATA) lua_pushboolean(L, lua_touserdata(L, 1) == NULL);
  else if (cd && CT(S->db, cd->ct)->kind == CT_PTR) lua_pushboolean(L, *(void **)cd->p == NULL);
  else lua_pushboolean(L, 0);
  return 1;
}

static int f_cdef(lua_State *L) {
  fstate *S = ffi_state(L);
  const char *src = luaL_checkstring(L, 1);
  char err[512];
  if (cparse_cdef(S->db, src, err, sizeof err) < 0) return luaL_error(L, "ffi.cdef: %s", err);
  return 0;
}

/* ---- element access ---- */

/* Finds the C object that cd[key] designates: its type, address, and in *avail the bytes
 * of the enclosing object from there on (-1 when it was reached through a pointer, whose
 * extent is unknown). Raises a clear error for keys that designate nothing, and for
 * indices outside an array whose element count is known. */
static void *locate(lua_State *L, fstate *S, cdata *cd, int key, int *ct, int64_t *avail, const char *ctx) {
  ctdb *db = S->db;
  ctype *c = CT(db, cd->ct);
  char *base = cd->p;
  int t = cd->ct;
  int64_t have = -1;
  if (c->kind == CT_PTR) {
    base = *(void **)cd->p;
    t = c->base;
    ctype *tc = CT(db, t);
    if (lua_type(L, key) == LUA_TNUMBER) {
      if (tc->size == 0) luaL_error(L, "%s: cannot index a pointer to '%s'", ctx, ffi_typename(S, t, (char[160]){0}, 160));
      if (!base) luaL_error(L, "%s: NULL pointer dereference", ctx);
      *ct = t;
      *avail = -1;
      return (char *)((uintptr_t)base + (uint64_t)luaL_checkinteger(L, key) * tc->size);  /* C's p[i] */
    }
    c = tc;
  } else have = ffi_cdavail(db, cd);
  if (c->kind == CT_ARRAY && lua_type(L, key) == LUA_TNUMBER) {
    lua_Integer i = luaL_checkinteger(L, key);
    int64_t n = c == CT(db, cd->ct) ? ffi_cdcount(db, cd) : c->n;
    if (n >= 0 && (i < 0 || i >= n))
      luaL_error(L, "%s: index %I out of range for '%s'", ctx, (lua_Integer)i, ffi_typename(S, t, (char[160]){0}, 160));
    uint32_t esz = CT(db, c->base)->size;
    *ct = c->base;
    *avail = have >= 0 ? (int64_t)esz : -1;  /* an element is its own object */
    return (char *)((uintptr_t)base + (uint64_t)i * esz);
  }
  if ((c->kind == CT_STRUCT || c->kind == CT_UNION) && lua_type(L, key) == LUA_TSTRING) {
    uint32_t off = 0;
    const cfield *f = ct_findfield(db, t, lua_tostring(L, key), &off);
    if (!f) luaL_error(L, "%s: '%s' has no member named '%s'", ctx, ffi_typename(S, t, (char[160]){0}, 160), lua_tostring(L, key));
    if (!base) luaL_error(L, "%s: NULL pointer dereference", ctx);
    *ct = (c->flags & CTF_CONST) ? ct_qual(db, f->type, CTF_CONST) : f->type;
    *avail = have < 0 ? -1 : have > (int64_t)off ? have - off : 0;
    return base + off;
  }
  luaL_error(L, "%s: cannot index '%s' with a %s", ctx, ffi_typename(S, cd->ct, (char[160]){0}, 160), luaL_typename(L, key));
  return NULL;
}

int ffi_cd_method(lua_State *L, fstate *S, cdata *cd);

static int cd_index(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = checkcd(L, S, 1, "cdata index");
  ctype *c = CT(S->db, cd->ct);
  if (lua_type(L, 2) == LUA_TSTRING && (c->kind == CT_FUNC || (c->kind == CT_PTR && CT(S->db, c->base)->kind == CT_FUNC)))
    return ffi_cd_method(L, S, cd);
  int ct;
  int64_t avail;
  void *p = locate(L, S, cd, 2, &ct, &avail, "cdata index");
  ctype *rc = CT(S->db, ct);
  if (rc->kind == CT_STRUCT || rc->kind == CT_UNION || rc->kind == CT_ARRAY)
    newref(L, S, ct, p, 1, avail);  /* the extent travels with the reference */
  else ffi_pushc(L, S, ct, p, 1);
  return 1;
}

static int cd_newindex(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = checkcd(L, S, 1, "cdata assignment");
  int ct;
  int64_t avail;
  void *p = locate(L, S, cd, 2, &ct, &avail, "cdata assignment");
  ctype *c = CT(S->db, ct);
  if (c->flags & CTF_CONST) return luaL_error(L, "cdata assignment: '%s' is const", ffi_typename(S, ct, (char[160]){0}, 160));
  if (c->kind == CT_ARRAY && c->n < 0 && avail >= 0 && !ffi_tocdata(L, S, 3))  /* a flexible array member */
    init_aggregate(L, S, 3, ct, p, "cdata assignment", flexcount(S->db, ct, avail));
  else ffi_toc(L, S, 3, ct, p, "cdata assignment", 0);
  return 0;
}

static int cd_len(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = checkcd(L, S, 1, "#");
  ctype *c = CT(S->db, cd->ct);
  if (c->kind != CT_ARRAY) return luaL_error(L, "attempt to get length of '%s'", ffi_typename(S, cd->ct, (char[160]){0}, 160));
  int64_t n = ffi_cdcount(S->db, cd);
  if (n < 0) return luaL_error(L, "attempt to get length of '%s' (size unknown)", ffi_typename(S, cd->ct, (char[160]){0}, 160));
  lua_pushinteger(L, n);
  return 1;
}

static int cd_tostring(lua_State *L) {
  fstate *S = ffi_state(L);
  cdata *cd = checkcd(L, S, 1, "tostring");
  char t[200];
  ctype *c = CT(S->db, cd->ct);
  ffi_typename(S, cd->ct, t, sizeof t);
  if (c->kind == CT_PTR || c->kind == CT_FUNC) lua_pushfstring(L, "cdata<%s>: %p", t, *(void **)cd->p);
  else if (ct_isint(c) && c->size == 8) {
    int64_t v; memcpy(&v, cd->p, 8);
    char n[32];
    if (c->flags & CTF_UNSIGNED) snprintf(n, sizeof n, "%lluULL", (unsigned long long)v);
    else snprintf(n, sizeof n, "%lldLL", (long long)v);
    lua_pushfstring(L, "cdata<%s>: %s", t, n);
  } else lua_pushfstring(L, "cdata<%s>: %p", t, cd->p);
  return 1;
}

/* The address and element size behind a pointer or array cdata, for arithmetic. */
static int ptrinfo(fstate *S, cdata *cd, char **p, size_t *esz, int *elem) {
  ctype *c = CT(S->db, cd->ct);
  if (c->kind == CT_PTR) *p = *(void **)cd->p;
  else if (c->kind == CT_ARRAY) *p = cd->p;
  else return 0;
  *elem = c->base;
  *esz = CT(S->db, c->base)->size;
  if (*esz == 0) *esz = 1;
  return 1;
}

static int isscalar(fstate *S, cdata *cd) {
  return cd && (ct_isint(CT(S->db, cd->ct)) || CT(S->db, cd->ct)->kind == CT_FLOAT);
}

/* A 64-bit unsigned cdata: its Lua value is an integer with the same bits, so arithmetic
 * and comparison that depend on the sign have to treat it apart. */
static int isu64(fstate *S, cdata *cd) {
  ctype *c = CT(S->db, cd->ct);
  return ct_isint(c) && c->size == 8 && ct_isunsigned(S->db, c);
}

/* Replaces the value at idx (an integer from a uint64_t) by its value as a float. */
static void u64_tofloat(lua_State *L, int idx) {
  lua_pushnumber(L, (lua_Number)(uint64_t)lua_tointeger(L, idx));
  lua_replace(L, idx);
}

/* Operands of an operation on scalar cdata, as Lua numbers on slots 1 and 2. When one was
 * a uint64_t, both integers are operated on as C does (unsigned), and an integer from a
 * uint64_t meets a float as its unsigned value. Returns 1 when the result is pushed.
 * `cmp` tells a comparison (op is LUA_OPEQ/LT/LE) from arithmetic: their codes overlap
 * (LUA_OPLT is LUA_OPSUB, LUA_OPLE is LUA_OPMUL). */
static int u64_operands(lua_State *L, int op, const int *u, int cmp) {
  if (!u[0] && !u[1]) return 0;
  if (lua_isinteger(L, 1) && lua_isinteger(L, 2) && (cmp ? op != LUA_OPEQ : op == LUA_OPMOD || op == LUA_OPIDIV)) {
    uint64_t x = (uint64_t)lua_tointeger(L, 1), y = (uint64_t)lua_tointeger(L, 2);
    if (op == LUA_OPLT) { lua_pushboolean(L, x < y); return 1; }
    if (op == LUA_OPLE) { lua_pushboolean(L, x <= y); return 1; }
    if (y == 0) return luaL_error(L, "attempt to perform 'n%s0'", op == LUA_OPMOD ? "%" : "//");
    lua_pushinteger(L, (lua_Integer)(op == LUA_OPMOD ? x % y : x / y));
    return 1;
  }
  int intop = lua_isinteger(L, 1) && lua_isinteger(L, 2) && (cmp || (op != LUA_OPDIV && op != LUA_OPPOW));
  if (!intop)  /* add, sub, mul, unm and eq of two integers keep their bits */
    for (int i = 0; i < 2; i++) if (u[i]) u64_tofloat(L, i + 1);
  return 0;
}

/* The integer added to a pointer: a Lua integer, a float with an integer value, or an
 * integer cdata (an int64_t, a size_t from ffi.cast), as LuaJIT takes them. */
static int64_t ptr_offset(lua_State *L, fstate *S, int idx, int ptridx) {
  int64_t v = 0; int isnum = 0; double d = 0;
  if (lua_type(L, idx) == LUA_TBOOLEAN || !toint64(L, S, idx, &v, &isnum, &d) ||
      (isnum && (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0))) {
    cdata *cd = ffi_tocdata(L, S, ptridx), *other = ffi_tocdata(L, S, idx);
    char t[160], o[168];
    if (other) snprintf(o, sizeof o, "'%s'", ffi_typename(S, other->ct, t, sizeof t));
    else snprintf(o, sizeof o, "%s", lua_type(L, idx) == LUA_TNUMBER ? "a non-integer number" : luaL_typename(L, idx));
    luaL_error(L, "attempt to perform arithmetic on '%s' and %s", ffi_typename(S, cd->ct, t, sizeof t), o);
  }
  return isnum ? (int64_t)d : v;
}

/* Arithmetic on scalar cdata converts both sides to Lua numbers; on pointers it is C's
 * pointer arithmetic scaled by the element size. */
static int arith(lua_State *L, int op) {
  fstate *S = ffi_state(L);
  cdata *a = ffi_tocdata(L, S, 1), *b = ffi_tocdata(L, S, 2);
  char *pa, *pb; size_t sa, sb; int ea, eb;
  if (a && ptrinfo(S, a, &pa, &sa, &ea)) {
    if (op == LUA_OPSUB && b && ptrinfo(S, b, &pb, &sb, &eb)) {
      if (ct_unqual(S->db, ea) != ct_unqual(S->db, eb)) return luaL_error(L, "pointer subtraction of different types");
      lua_pushinteger(L, (lua_Integer)((pa - pb) / (ptrdiff_t)sa));
      return 1;
    }
    if (op != LUA_OPADD && op != LUA_OPSUB) return luaL_error(L, "invalid pointer arithmetic");
    uint64_t d = (uint64_t)ptr_offset(L, S, 2, 1) * sa;  /* wraps like the address does */
    pushptr(L, S, ct_ptr(S->db, ea, 0), (void *)(op == LUA_OPADD ? (uintptr_t)pa + d : (uintptr_t)pa - d));
    return 1;
  }
  if (b && op == LUA_OPADD && ptrinfo(S, b, &pb, &sb, &eb)) {
    pushptr(L, S, ct_ptr(S->db, eb, 0), (void *)((uintptr_t)pb + (uint64_t)ptr_offset(L, S, 1, 2) * sb));
    return 1;
  }
  int u[2] = { 0, 0 };
  for (int i = 1; i <= 2; i++) {
    cdata *x = i == 1 ? a : b;
    if (x && !isscalar(S, x)) return luaL_error(L, "attempt to perform arithmetic on '%s'", ffi_typename(S, x->ct, (char[160]){0}, 160));
    if (x) { u[i - 1] = isu64(S, x); ffi_pushc(L, S, x->ct, x->p, 0); lua_replace(L, i); }
  }
  lua_settop(L, 2);
  if (op == LUA_OPUNM) u[1] = u[0];
  if (u64_operands(L, op, u, 0)) return 1;
  lua_arith(L, op);
  return 1;
}

static int cd_add(lua_State *L) { return arith(L, LUA_OPADD); }
static int cd_sub(lua_State *L) { return arith(L, LUA_OPSUB); }
static int cd_mul(lua_State *L) { return arith(L, LUA_OPMUL); }
static int cd_div(lua_State *L) { return arith(L, LUA_OPDIV); }
static int cd_mod(lua_State *L) { return arith(L, LUA_OPMOD); }
static int cd_unm(lua_State *L) { return arith(L, LUA_OPUNM); }
static int cd_idiv(lua_State *L) { return arith(L, LUA_OPIDIV); }
static int cd_pow(lua_State *L) { return arith(L, LUA_OPPOW); }

/* Comparison key of a cdata: its address for pointers, arrays and records. */
static int cmpval(lua_State *L, fstate *S, int idx, int *isptr, uintptr_t *addr, int *u) {
  cdata *cd = ffi_tocdata(L, S, idx);
  char *p; size_t sz; int e;
  *isptr = 0;
  *u = cd && isscalar(S, cd) && isu64(S, cd);
  if (cd && ptrinfo(S, cd, &p, &sz, &e)) { *isptr = 1; *addr = (uintptr_t)p; return 1; }
  if (cd && CT(S->db, cd->ct)->kind == CT_FUNC) { *isptr = 1; *addr = (uintptr_t) * (void **)cd->p; return 1; }
  if (cd && isscalar(S, cd)) { ffi_pushc(L, S, cd->ct, cd->p, 0); lua_replace(L, idx); return 1; }
  if (cd) { *isptr = 1; *addr = (uintptr_t)cd->p; return 1; }
  return lua_type(L, idx) == LUA_TNUMBER;
}

static int compare(lua_State *L, int op) {
  fstate *S = ffi_state(L);
  int pa, pb, u[2]; uintptr_t aa = 0, ab = 0;
  int oka = cmpval(L, S, 1, &pa, &aa, &u[0]), okb = cmpval(L, S, 2, &pb, &ab, &u[1]);
  if (pa && pb) {
    lua_pushboolean(L, op == LUA_OPEQ ? aa == ab : op == LUA_OPLT ? aa < ab : aa <= ab);
    return 1;
  }
  if (!oka || !okb || pa || pb) {
    if (op == LUA_OPEQ) { lua_pushboolean(L, 0); return 1; }
    return luaL_error(L, "attempt to compare %s with %s", luaL_typename(L, 1), luaL_typename(L, 2));
  }
  if (u64_operands(L, op, u, 1)) return 1;
  lua_pushboolean(L, lua_compare(L, 1, 2, op));
  return 1;
}

static int cd_eq(lua_State *L) { return compare(L, LUA_OPEQ); }
static int cd_lt(lua_State *L) { return compare(L, LUA_OPLT); }
static int cd_le(lua_State *L) { return compare(L, LUA_OPLE); }

/* ---- libffi types and calls ---- */

/* The libffi description of a struct or union, built once per record. Arrays inside are
 * spelled out element by element; a union becomes a struct of its widest alignment unit
 * (float/double when all members are floating, else integers), which gives the classes
 * the x86-64 psABI assigns in the common cases. */
static ffi_type *record_ffi(lua_State *L, fstate *S, int ct, const char *ctx) {
  ctype *c = CT(S->db, ct_unqual(S->db, ct));
  if (c->ffi) return c->ffi;
  crecord *r = &S->db->r[c->aux];
  if (!r->complete || c->size == 0) luaL_error(L, "%s: cannot pass '%s' by value", ctx, ffi_typename(S, ct, (char[160]){0}, 160));
  /* libffi lays out a struct from its member types alone; a packed or aligned layout
   * would be passed as another one (and the psABI classifies unaligned members apart) */
  if (!ct_natural(S->db, ct))
    luaL_error(L, "%s: cannot pass '%s' by value: packed or aligned layouts are not supported in calls",
               ctx, ffi_typename(S, ct, (char[160]){0}, 160));
  size_t nel = 0;
  ffi_type *unit = NULL;
  if (c->kind == CT_UNION) {
    int allfloat = 1;
    for (int i = 0; i < r->nfields; i++) if (CT(S->db, r->fields[i].type)->kind != CT_FLOAT) allfloat = 0;
    unit = c->align >= 8 ? (allfloat ? &ffi_type_double : &ffi_type_uint64) :
           c->align == 4 ? (allfloat ? &ffi_type_float : &ffi_type_uint32) :
           c->align == 2 ? &ffi_type_uint16 : &ffi_type_uint8;
    nel = c->size / unit->size;
  } else {
    /* first pass: member types (may raise; nothing of ours is allocated yet) */
    for (int i = 0; i < r->nfields; i++) {
      ctype *f = CT(S->db, r->fields[i].type);
      ffi_typeof(L, S, f->kind == CT_ARRAY ? f->base : r->fields[i].type, ctx);
      nel += f->kind == CT_ARRAY ? (size_t)(f->n > 0 ? f->n : 0) : 1;
    }
  }
  ffi_type *ft = calloc(1, sizeof(ffi_type) + sizeof(ffi_type *) * (nel + 1));
  if (!ft) luaL_error(L, "%s: out of memory", ctx);
  ft->type = FFI_TYPE_STRUCT;
  ft->elements = (ffi_type **)(ft + 1);
  size_t k = 0;
  if (unit) for (; k < nel; k++) ft->elements[k] = unit;
  else for (int i = 0; i < r->nfields; i++) {  /* second pass: cached now, cannot raise */
    ctype *f = CT(S->db, r->fields[i].type);
    if (f->kind == CT_ARRAY) {
      for (int64_t j = 0; j < f->n; j++) ft->elements[k++] = ffi_typeof(L, S, f->base, ctx);
    } else ft->elements[k++] = ffi_typeof(L, S, r->fields[i].type, ctx);
  }
  ft->elements[k] = NULL;
  c->ffi = ft;
  return ft;
}

ffi_type *ffi_typeof(lua_State *L, fstate *S, int ct, const char *ctx) {
  ctype *c = CT(S->db, ct);
  switch (c->kind) {
  case CT_VOID: return &ffi_type_void;
  case CT_BOOL: return &ffi_type_uint8;
  case CT_ENUM: {
    int u = ct_isunsigned(S->db, c);
    return c->size == 8 ? (u ? &ffi_type_uint64 : &ffi_type_sint64) : (u ? &ffi_type_uint32 : &ffi_type_sint32);
  }
  case CT_INT: {
    int u = c->flags & CTF_UNSIGNED;
    switch (c->size) {
    case 1: return u ? &ffi_type_uint8 : &ffi_type_sint8;
    case 2: return u ? &ffi_type_uint16 : &ffi_type_sint16;
    case 4: return u ? &ffi_type_uint32 : &ffi_type_sint32;
    default: return u ? &ffi_type_uint64 : &ffi_type_sint64;
    }
  }
  case CT_FLOAT: return c->size == 4 ? &ffi_type_float : c->size == 8 ? &ffi_type_double : &ffi_type_longdouble;
  case CT_PTR: return &ffi_type_pointer;
  case CT_STRUCT: case CT_UNION: return record_ffi(L, S, ct, ctx);
  default:
    luaL_error(L, "%s: cannot pass '%s' by value", ctx, ffi_typename(S, ct, (char[160]){0}, 160));
    return NULL;
  }
}

/* The direct call path: on x86-64 System V, integer-class arguments travel in rdi..r9
 * and floating ones in xmm0..7, each class in order and independently of the other. So a
 * function whose parameters all fit in registers (at most 6 integers or pointers, at most
 * 8 floats or doubles, no aggregates, not variadic) can be called as
 * R f(int64 x6, double x8) with its arguments dropped into the right slots, without
 * libffi's per-call classification. Everything else goes through ffi_call. */
static int fast_class(fstate *S, ctype *c, fcif *fc, uint8_t *cls) {
#if defined(__x86_64__) && !defined(_WIN32)
  if (c->flags & CTF_VARARG) return FAST_NONE;
  int ni = 0, nf = 0;
  for (int i = 0; i < c->n; i++) {
    ctype *p = CT(S->db, S->db->params[c->aux + i]);
    if (p->kind == CT_INT && p->size <= 8) {
      int u = (p->flags & CTF_UNSIGNED) != 0;
      cls[i] = p->size == 1 ? FA_I8 + u : p->size == 2 ? FA_I16 + u : p->size == 4 ? FA_I32 + u : FA_I64;
      ni++;
    } else if (ct_isint(p) || p->kind == CT_PTR) { cls[i] = FA_INTX; ni++; }
    else if (p->kind == CT_FLOAT && p->size <= 8) { cls[i] = p->size == 8 ? FA_DOUBLE : FA_FLOAT; nf++; }
    else return FAST_NONE;
  }
  if (ni > 6 || nf > 8) return FAST_NONE;
  fc->nfloat = nf;
  fc->allint = 1;
  for (int i = 0; i < c->n; i++) {
    if (cls[i] > FA_I64) { fc->allint = 0; break; }
    static const uint8_t bits[] = { 8, 8, 16, 16, 32, 32, 64 };
    int b = bits[cls[i]];
    fc->narrow[i].mask = b == 64 ? ~(uint64_t)0 : ((uint64_t)1 << b) - 1;
    fc->narrow[i].sign = b == 64 || (cls[i] & 1) ? 0 : (uint64_t)1 << (b - 1);
  }
  ctype *r = CT(S->db, c->base);
  fc->ret = FR_OTHER;
  if (r->kind == CT_INT && r->size == 4) fc->ret = (r->flags & CTF_UNSIGNED) ? FR_U32 : FR_I32;
  else if (r->kind == CT_INT && r->size == 8) fc->ret = FR_I64;
  else if (r->kind == CT_FLOAT && r->size == 8) fc->ret = FR_DOUBLE;
  if (r->kind == CT_FLOAT) fc->allint = 0;
  if (r->kind == CT_VOID) { fc->ret = FR_VOID; return FAST_VOID; }
  if (ct_isint(r) || r->kind == CT_PTR) return FAST_INT;
  if (r->kind == CT_FLOAT && r->size == 8) return FAST_DOUBLE;
  if (r->kind == CT_FLOAT && r->size == 4) return FAST_FLOAT;
#else
  (void)S; (void)c; (void)fc; (void)cls;
#endif
  return FAST_NONE;
}

/* The cached cif of a function type (fixed parameters only; variadic calls add their
 * extra arguments per call). */
fcif *ffi_getcif(lua_State *L, fstate *S, int ft, const char *ctx) {
  ctype *c = CT(S->db, ft);
  if (c->ffi) return c->ffi;
  if (c->n > FFI_MAXARGS) luaL_error(L, "%s: too many parameters", ctx);
  ffi_type *at[FFI_MAXARGS + 1];
  ffi_type *rt = ffi_typeof(L, S, c->base, ctx);  /* these may raise: nothing allocated yet */
  for (int i = 0; i < c->n; i++) at[i] = ffi_typeof(L, S, S->db->params[c->aux + i], ctx);
  fcif *fc = calloc(1, sizeof(fcif) + sizeof(ffi_type *) * (size_t)(c->n + 1) + (size_t)c->n + 1);
  if (!fc) luaL_error(L, "%s: out of memory", ctx);
  fc->nparams = (int)c->n;
  for (int i = 0; i < c->n; i++) fc->atypes[i] = at[i];
  if (ffi_prep_cif(&fc->cif, FFI_DEFAULT_ABI, (unsigned)c->n, rt, fc->atypes) != FFI_OK) {
    free(fc);
    luaL_error(L, "%s: libffi cannot prepare a call of '%s'", ctx, ffi_typename(S, ft, (char[160]){0}, 160));
  }
  fc->fast = fast_class(S, c, fc, (uint8_t *)(fc->atypes + c->n + 1));
  if (fc->fast) fc->cls = (uint8_t *)(fc->atypes + c->n + 1);
  c->ffi = fc;
  return fc;
}

void *ffi_checkfunc(lua_State *L, fstate *S, int idx, int *ft, const char *ctx) {
  cdata *cd = ffi_tocdata(L, S, idx);
  if (!cd) luaL_error(L, "%s: C function expected, got %s", ctx, luaL_typename(L, idx));
  ctype *c = CT(S->db, cd->ct);
  if (c->kind == CT_FUNC) *ft = cd->ct;
  else if (c->kind == CT_PTR && CT(S->db, c->base)->kind == CT_FUNC) *ft = c->base;
  else luaL_error(L, "%s: '%s' is not callable", ctx, ffi_typename(S, cd->ct, (char[160]){0}, 160));
  void *fn = *(void **)cd->p;
  if (!fn) luaL_error(L, "%s: call through a NULL function pointer", ctx);
  return fn;
}

typedef union slot { int64_t i; double d; void *p; long double ld; } slot;

/* The libffi type used for an extra argument of a variadic call, from the Lua value:
 * integers as int64, floats as double (C's default promotions), strings and pointers as
 * pointers, scalar cdata as their own (promoted) type. */
static int vararg_type(lua_State *L, fstate *S, int idx, ffi_type **ft) {
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) { *ft = &ffi_type_sint64; return S->db->t_i64; }
    *ft = &ffi_type_double; return S->db->t_double;
  case LUA_TBOOLEAN: *ft = &ffi_type_sint32; return S->db->t_i32;
  case LUA_TSTRING: *ft = &ffi_type_pointer; return S->db->t_ccharp;
  case LUA_TNIL: case LUA_TLIGHTUSERDATA: *ft = &ffi_type_pointer; return S->db->t_voidp;
  case LUA_TUSERDATA: {
    cdata *cd = ffi_tocdata(L, S, idx);
    if (cd) {
      ctype *c = CT(S->db, cd->ct);
      if (c->kind == CT_FLOAT && c->size == 4) { *ft = &ffi_type_double; return S->db->t_double; }
      if (ct_isint(c) && c->size < 4) { *ft = &ffi_type_sint32; return S->db->t_i32; }
      if (c->kind == CT_ARRAY || c->kind == CT_FUNC) { *ft = &ffi_type_pointer; return S->db->t_voidp; }
      *ft = ffi_typeof(L, S, cd->ct, "variadic argument");
      return cd->ct;
    }
  }
  /* fall through */
  default:
    luaL_error(L, "cannot pass a %s as a variadic argument", luaL_typename(L, idx));
    return 0;
  }
}

/* Calls a C function cdata with Lua arguments. The fixed-parameter path allocates
 * nothing: arguments live in stack slots, the cif is the cached one. A callback that
 * raised an error while the C function ran has its error re-raised here, once the C
 * function has returned. */
/* After a fast call: frees the temporary callbacks made for its arguments and raises the
 * error a callback left, else returns the call's results (n < 0: none). */
static int call_epilogue(lua_State *L, fstate *S, int mark, int n) {
  if (mark != S->ntemps) ffi_cb_release_temps(L, S, mark);
  if (S->cb_error_ref != LUA_NOREF && S->in_call == 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->cb_error_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, S->cb_error_ref);
    S->cb_error_ref = LUA_NOREF;
    return lua_error(L);
  }
  return n < 0 ? 0 : n;
}

typedef union fslot { double d; float f; uint64_t u; } fslot;
typedef int64_t (*fast_i)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                          double, double, double, double, double, double, double, double);
typedef double (*fast_d)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         double, double, double, double, double, double, double, double);
typedef float (*fast_f)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                        double, double, double, double, double, double, double, double);

/* An integer argument widened as the callee expects it: sign or zero extended. */
static int64_t widen(const ctype *p, const slot *v) {
  int u = (p->flags & CTF_UNSIGNED) || p->kind == CT_BOOL;
  switch (p->size) {
  case 1: return u ? (int64_t)*(const uint8_t *)v : *(const int8_t *)v;
  case 2: return u ? (int64_t)*(const uint16_t *)v : *(const int16_t *)v;
  case 4: return u ? (int64_t)*(const uint32_t *)v : *(const int32_t *)v;
  default: return v->i;
  }
}

typedef int64_t (*fast_n)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

/* The direct path of cd_call (see fast_class): arguments straight into register slots.
 * Lua integers for fixed-size integer parameters skip the generic conversion, and a
 * function without floating parameters or result is called without loading the xmm
 * registers, so a call costs little more than a hand-written binding. */
static __attribute__((noinline))
int fast_call(lua_State *L, fstate *S, fcif *fc, ctype *c, void *fn) {
  int64_t ia[6] = { 0, 0, 0, 0, 0, 0 };
  fslot da[8];
  int ni = 0, nf = 0, np = fc->nparams;
  const uint8_t *cls = fc->cls;
  if (fc->nfloat) memset(da, 0, sizeof da);
  for (int i = 0; i < np; i++) {
    int k = cls[i], idx = i + 2;
    slot v;
    if (k <= FA_I64) {
      if (lua_isinteger(L, idx)) v.i = lua_tointeger(L, idx);
      else ffi_toc(L, S, idx, S->db->params[c->aux + i], &v, "C function call", TOC_ARG);
      switch (k) {
      case FA_I8: v.i = (int8_t)v.i; break;
      case FA_U8: v.i = (uint8_t)v.i; break;
      case FA_I16: v.i = (int16_t)v.i; break;
      case FA_U16: v.i = (uint16_t)v.i; break;
      case FA_I32: v.i = (int32_t)v.i; break;
      case FA_U32: v.i = (uint32_t)v.i; break;
      default: break;
      }
      ia[ni++] = v.i;
    } else if (k == FA_INTX) {
      int pt = S->db->params[c->aux + i];
      ctype *p = CT(S->db, pt);
      ffi_toc(L, S, idx, pt, &v, "C function call", TOC_ARG);
      ia[ni++] = p->kind == CT_PTR ? v.i : widen(p, &v);
    } else {
      ffi_toc(L, S, idx, S->db->params[c->aux + i], k == FA_DOUBLE ? (void *)&da[nf].d : (void *)&da[nf].f,
              "C function call", TOC_ARG);
      nf++;
    }
  }
  slot r;
  if (S->in_call++ == 0) atomic_store_explicit(S->busy, ++S->seq, memory_order_release);
  if (fc->fast == FAST_DOUBLE)
    r.d = ((fast_d)fn)(ia[0], ia[1], ia[2], ia[3], ia[4], ia[5], da[0].d, da[1].d, da[2].d, da[3].d,
                       da[4].d, da[5].d, da[6].d, da[7].d);
  else if (fc->fast == FAST_FLOAT) {
    float f = ((fast_f)fn)(ia[0], ia[1], ia[2], ia[3], ia[4], ia[5], da[0].d, da[1].d, da[2].d, da[3].d,
                           da[4].d, da[5].d, da[6].d, da[7].d);
    memcpy(&r, &f, sizeof f);
  } else if (fc->nfloat == 0)
    r.i = ((fast_n)fn)(ia[0], ia[1], ia[2], ia[3], ia[4], ia[5]);
  else
    r.i = ((fast_i)fn)(ia[0], ia[1], ia[2], ia[3], ia[4], ia[5], da[0].d, da[1].d, da[2].d, da[3].d,
                       da[4].d, da[5].d, da[6].d, da[7].d);
  S->saved_errno = errno;
  if (--S->in_call == 0) atomic_store_explicit(S->busy, 0, memory_order_release);
  switch (fc->ret) {
  case FR_VOID: return -1;
  case FR_I32: lua_pushinteger(L, (int32_t)r.i); return 1;
  case FR_U32: lua_pushinteger(L, (uint32_t)r.i); return 1;
  case FR_I64: lua_pushinteger(L, (lua_Integer)r.i); return 1;
  case FR_DOUBLE: lua_pushnumber(L, r.d); return 1;
  default: ffi_pushc(L, S, c->base, &r, 0); return 1;
  }
}

static int call_slow(lua_State *L, cdata *cd);

/* The direct path for functions taking only fixed-size integers and returning an integer,
 * a pointer or nothing: the commonest shape, so it gets a loop with no per-parameter
 * dispatch. Any argument that is not a Lua integer sends the call to the generic path,
 * which converts it or raises the error; nothing has happened yet at that point. */
static inline __attribute__((always_inline))
int int_call(lua_State *L, fstate *S, fcif *fc, cdata *cd, void *fn) {
  int64_t a[6] = { 0, 0, 0, 0, 0, 0 };
  for (int i = 0, np = fc->nparams; i < np; i++) {
    if (!lua_isinteger(L, i + 2)) return call_slow(L, cd);
    uint64_t v = (uint64_t)lua_tointeger(L, i + 2);
    a[i] = (int64_t)(((v & fc->narrow[i].mask) ^ fc->narrow[i].sign) - fc->narrow[i].sign);
  }
  S->in_call = 1;
  atomic_store_explicit(S->busy, ++S->seq, memory_order_release);
  slot r;
  r.i = ((fast_n)fn)(a[0], a[1], a[2], a[3], a[4], a[5]);
  S->saved_errno = errno;
  S->in_call = 0;
  atomic_store_explicit(S->busy, 0, memory_order_release);
  if (S->cb_error_ref != LUA_NOREF) return call_epilogue(L, S, 0, 0);
  if (fc->ret == FR_I32) lua_pushinteger(L, (int32_t)r.i);
  else if (fc->ret == FR_I64) lua_pushinteger(L, (lua_Integer)r.i);
  else if (fc->ret == FR_VOID) return 0;
  else if (fc->ret == FR_U32) lua_pushinteger(L, (uint32_t)r.i);
  else ffi_pushc(L, S, CT(S->db, cd->ct)->base, &r, 0);
  return 1;
}

static int cd_call(lua_State *L) {
  /* __call is only reachable through the cdata metatables (which are protected by
   * __metatable), so argument 1 is a cdata: skip the metatable check on this hot path */
  cdata *cd = lua_touserdata(L, 1);
  void **fp = cd->p;
  if ((cd->flags & CDF_FN) && fp[1]) {  /* a library function called before */
    fstate *S = fp[2];
    fcif *fc = fp[1];
    if (lua_gettop(L) - 1 == fc->nparams && S->in_call == 0 && S->ntemps == 0) {
      if (fc->allint) return int_call(L, S, fc, cd, fp[0]);
      int n = fast_call(L, S, fc, CT(S->db, cd->ct), fp[0]);
      if (S->ntemps == 0 && S->cb_error_ref == LUA_NOREF) return n < 0 ? 0 : n;
      return call_epilogue(L, S, 0, n);
    }
  }
  return call_slow(L, cd);
}

/* Everything but the direct call of a cached library function: kept out of line so that
 * the hot path above does not pay for this frame's argument arrays. */
static __attribute__((noinline)) int call_slow(lua_State *L, cdata *cd) {
  void **fp = cd->p;
  fstate *S = ffi_state(L);
  int ft;
  ctype *c = CT(S->db, cd->ct);
  void *fn;
  if (c->kind == CT_FUNC) { ft = cd->ct; fn = *(void **)cd->p; }
  else if (c->kind == CT_PTR && CT(S->db, c->base)->kind == CT_FUNC) { ft = c->base; fn = *(void **)cd->p; }
  else fn = ffi_checkfunc(L, S, 1, &ft, "C function call");
  if (!fn) return luaL_error(L, "C function call: call through a NULL function pointer");
  c = CT(S->db, ft);
  fcif *fc = c->ffi ? c->ffi : ffi_getcif(L, S, ft, "C function call");
  int nargs = lua_gettop(L) - 1;
  int vararg = c->flags & CTF_VARARG;
  if (nargs != fc->nparams && !(vararg && nargs > fc->nparams))
    return luaL_error(L, "C function call: wrong number of arguments (expected %d, got %d)", fc->nparams, nargs);
  if (nargs > FFI_MAXARGS) return luaL_error(L, "C function call: too many arguments");
  if (fc->fast) {
    if (S->in_call == 0 && S->ntemps > 0) ffi_cb_release_temps(L, S, 0);
    if ((cd->flags & CDF_FN) && !fp[1]) { fp[1] = fc; fp[2] = S; }
    int mark = S->ntemps;
    int n = fast_call(L, S, fc, c, fn);
    return call_epilogue(L, S, mark, n);
  }
  slot slots[FFI_MAXARGS];
  void *av[FFI_MAXARGS];
  ffi_type *vt[FFI_MAXARGS];
  ffi_cif vcif;
  ffi_cif *cif = &fc->cif;
  int mark = S->ntemps;
  for (int i = 0; i < nargs; i++) {
    int pt;
    if (i < fc->nparams) pt = S->db->params[c->aux + i];
    else { pt = vararg_type(L, S, i + 2, &vt[i]); }
    if (i < fc->nparams) vt[i] = fc->atypes[i];
    ctype *p = CT(S->db, pt);
    if (p->size > sizeof(slot)) av[i] = lua_newuserdatauv(L, p->size, 0);  /* big struct by value */
    else av[i] = &slots[i];
    if (CT(S->db, pt)->kind == CT_ARRAY) { slots[i].p = addrof(L, S, i + 2, "C function call"); av[i] = &slots[i]; }
    else ffi_toc(L, S, i + 2, pt, av[i], "C function call", TOC_ARG);
  }
  if (nargs > fc->nparams) {
    if (ffi_prep_cif_var(&vcif, FFI_DEFAULT_ABI, (unsigned)fc->nparams, (unsigned)nargs, fc->cif.rtype, vt) != FFI_OK)
      return luaL_error(L, "C function call: libffi cannot prepare this variadic call");
    cif = &vcif;
  }
  ctype *rc = CT(S->db, c->base);
  slot rbuf[2];
  void *rv = rc->size > sizeof rbuf ? lua_newuserdatauv(L, rc->size, 0) : rbuf;
  ffi_cb_loop_enter(S);
  ffi_call(cif, FFI_FN(fn), rv, av);
  S->saved_errno = errno;
  ffi_cb_loop_leave(S);
  if (mark != S->ntemps) ffi_cb_release_temps(L, S, mark);
  if (S->cb_error_ref != LUA_NOREF && S->in_call == 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->cb_error_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, S->cb_error_ref);
    S->cb_error_ref = LUA_NOREF;
    return lua_error(L);
  }
  switch (rc->kind) {
  case CT_VOID: return 0;
  case CT_BOOL: case CT_INT: case CT_ENUM:
    if (rc->size < sizeof(ffi_arg)) {  /* libffi widens small integer returns to ffi_arg */
      int64_t v = (rc->flags & CTF_UNSIGNED) || rc->kind == CT_BOOL ? (int64_t)(ffi_arg)rbuf[0].i : (int64_t)(ffi_sarg)rbuf[0].i;
      store_int(rbuf, (int)rc->size, v);
    }
    ffi_pushc(L, S, c->base, rv, 0);
    return 1;
  case CT_STRUCT: case CT_UNION: {
    cdata *rcd = ffi_newcdata(L, S, ct_unqual(S->db, c->base), rc->size);
    memcpy(rcd->p, rv, rc->size);
    return 1;
  }
  default:
    ffi_pushc(L, S, c->base, rv, 0);
    return 1;
  }
}

/* ---- libraries ---- */

/* Resolves a declared symbol in a library the first time it is used. Functions are cached
 * in the library table (so C.f is a plain table hit afterwards); variables are read on
 * every access, since C may change them. */
static void *clib_sym(lua_State *L, fstate *S, csym **sp) {
  const char *name = luaL_checkstring(L, 2);
  csym *s = ct_findsym(S->db, name);
  if (!s || (s->kind != SYM_FUNC && s->kind != SYM_VAR && s->kind != SYM_CONST))
    luaL_error(L, "ffi: missing declaration for symbol '%s'", name);
  *sp = s;
  if (s->kind == SYM_CONST) return NULL;
  void **h = lua_touserdata(L, lua_upvalueindex(2));
  dlerror();
  void *addr = dlsym(*h, s->asmname ? s->asmname : name);
  if (!addr) {
    const char *e = dlerror();
    luaL_error(L, "ffi: cannot resolve symbol '%s': %s", name, e ? e : "not found");
  }
  return addr;
}

static int clib_index(lua_State *L) {
  fstate *S = ffi_state(L);
  csym *s;
  void *addr = clib_sym(L, S, &s);
  if (s->kind == SYM_CONST) { lua_pushinteger(L, s->value); return 1; }
  if (s->kind == SYM_VAR) { ffi_pushc(L, S, s->type, addr, 0); return 1; }
  cdata *fcd = ffi_newcdata(L, S, s->type, 3 * sizeof(void *));
  fcd->flags |= CDF_FN;  /* payload: address, then the cif and state cached by cd_call */
  ((void **)fcd->p)[0] = addr;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

static int clib_newindex(lua_State *L) {
  fstate *S = ffi_state(L);
  csym *s;
  void *addr = clib_sym(L, S, &s);
  if (s->kind != SYM_VAR) return luaL_error(L, "ffi: '%s' is not a variable", lua_tostring(L, 2));
  if (CT(S->db, s->type)->flags & CTF_CONST) return luaL_error(L, "ffi: '%s' is const", lua_tostring(L, 2));
  ffi_toc(L, S, 3, s->type, addr, "ffi: assignment", 0);
  return 0;
}

static void pushclib(lua_State *L, int sidx, void *handle) {
  sidx = lua_absindex(L, sidx);
  lua_newtable(L);
  lua_createtable(L, 0, 4);
  /* Libraries are never unloaded: their own threads may still run, or call back into
   * closures, after the Lua state is gone. */
  void **h = lua_newuserdatauv(L, sizeof(void *), 0);
  *h = handle;
  /* __index and __newindex share the state and the handle as upvalues */
  lua_pushvalue(L, sidx);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, clib_index, 2);
  lua_setfield(L, -3, "__index");
  lua_pushvalue(L, sidx);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, clib_newindex, 2);
  lua_setfield(L, -3, "__newindex");
  lua_setfield(L, -2, "__handle");
  lua_pushliteral(L, "ffi.clib");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
}

/* ffi.load(name [, global]): a path, or a short name tried as libNAME.so, NAME, then
 * libNAME.so.N for the runtime-only packages that ship no unversioned link. */
static int f_load(lua_State *L) {
  fstate *S = ffi_state(L);
  const char *name = luaL_checkstring(L, 1);
  int mode = RTLD_NOW | (lua_toboolean(L, 2) ? RTLD_GLOBAL : RTLD_LOCAL);
  void *h = NULL;
  char buf[512];
  const char *first_err = NULL;
  if (strchr(name, '/') || strstr(name, ".so")) h = dlopen(name, mode);
  else {
    snprintf(buf, sizeof buf, "lib%s.so", name);
    h = dlopen(buf, mode);
    if (!h) { first_err = lua_pushstring(L, dlerror()); h = dlopen(name, mode); }
    for (int v = 0; !h && v < 10; v++) {
      snprintf(buf, sizeof buf, "lib%s.so.%d", name, v);
      h = dlopen(buf, mode);
    }
  }
  if (!h) {
    const char *e = dlerror();
    return luaL_error(L, "ffi.load: cannot load '%s': %s", name, first_err ? first_err : e ? e : "unknown error");
  }
  (void)S;
  pushclib(L, lua_upvalueindex(1), h);
  return 1;
}

/* ---- module ---- */

static int ct_tostr(lua_State *L) {
  fstate *S = ffi_state(L);
  char t[200];
  lua_pushfstring(L, "ctype<%s>", ffi_typename(S, *(int *)lua_touserdata(L, 1), t, sizeof t));
  return 1;
}

static int ct_eq(lua_State *L) {
  fstate *S = ffi_state(L);
  int *a = lua_touserdata(L, 1), *b = lua_touserdata(L, 2);
  int ma = 0, mb = 0;
  if (a && lua_getmetatable(L, 1)) { ma = lua_topointer(L, -1) == S->mt_ctype; lua_pop(L, 1); }
  if (b && lua_getmetatable(L, 2)) { mb = lua_topointer(L, -1) == S->mt_ctype; lua_pop(L, 1); }
  lua_pushboolean(L, ma && mb && ct_unqual(S->db, *a) == ct_unqual(S->db, *b));
  return 1;
}

static void free_ffi(ctdb *db) {
  for (int i = 0; i < db->nt; i++) {
    free(db->t[i].ffi);
    db->t[i].ffi = NULL;
  }
}

static int state_gc(lua_State *L) {
  fstate *S = lua_touserdata(L, 1);
  ffi_cb_close(S);
  if (S->db) { free_ffi(S->db); ctdb_free(S->db); S->db = NULL; }
  return 0;
}

static int f_abi(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  lua_pushboolean(L, !strcmp(p, "64bit") || !strcmp(p, "le") || !strcmp(p, "fpu") || !strcmp(p, "linux"));
  return 1;
}

static const luaL_Reg cdata_mt[] = {
  { "__index", cd_index }, { "__newindex", cd_newindex }, { "__call", cd_call },
  { "__tostring", cd_tostring }, { "__len", cd_len }, { "__eq", cd_eq }, { "__lt", cd_lt },
  { "__le", cd_le }, { "__add", cd_add }, { "__sub", cd_sub }, { "__mul", cd_mul },
  { "__div", cd_div }, { "__mod", cd_mod }, { "__unm", cd_unm }, { "__idiv", cd_idiv },
  { "__pow", cd_pow }, { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "cdef", f_cdef }, { "new", f_new }, { "cast", f_cast }, { "sizeof", f_sizeof },
  { "alignof", f_alignof }, { "offsetof", f_offsetof }, { "typeof", f_typeof },
  { "istype", f_istype }, { "string", f_string }, { "copy", f_copy }, { "fill", f_fill },
  { "gc", f_gc }, { "errno", f_errno }, { "tonumber", f_tonumber }, { "isnull", f_isnull },
  { "load", f_load }, { "abi", f_abi }, { NULL, NULL }
};

/* Builds one metatable with the shared state as the upvalue of every method and returns
 * its registry reference; its pointer identifies the objects that carry it. */
static int make_mt(lua_State *L, const luaL_Reg *l, const char *name, const void **ptr) {
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, l, 1);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "cdata");
  lua_setfield(L, -2, "__metatable");
  *ptr = lua_topointer(L, -1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

__attribute__((visibility("default"))) int luaopen_lasync_ffi(lua_State *L);

/* Pins this module in memory: Lua unloads C modules when the state closes, but closures
 * handed to C libraries must keep working (and say "closed") after that. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)(intptr_t)pin_module, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

int luaopen_lasync_ffi(lua_State *L) {
  pin_module();
  fstate *S = lua_newuserdatauv(L, sizeof(fstate), 0);
  memset(S, 0, sizeof *S);
  S->cb_error_ref = LUA_NOREF;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  S->db = ctdb_new();
  int sidx = lua_gettop(L);
  S->ref_cdata = make_mt(L, cdata_mt, "cdata", &S->mt_cdata);
  static const luaL_Reg gc_extra[] = { { "__gc", cd_gc }, { NULL, NULL } };
  S->ref_cdata_gc = make_mt(L, cdata_mt, "cdata", &S->mt_cdata_gc);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_cdata_gc);
  lua_pushvalue(L, sidx);
  luaL_setfuncs(L, gc_extra, 1);
  lua_pop(L, 1);
  static const luaL_Reg ctype_mt[] = { { "__tostring", ct_tostr }, { "__eq", ct_eq },
                                       { "__call", f_new }, { NULL, NULL } };
  S->ref_ctype = make_mt(L, ctype_mt, "ctype", &S->mt_ctype);
  lua_newtable(L);
  S->ref_cache = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, sidx);  /* anchor the state for as long as the registry lives */
  luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  lua_pushvalue(L, sidx);
  luaL_setfuncs(L, funcs, 1);
  ffi_cb_open(L, S);
  ffi_cb_functions(L, S, sidx);
  pushclib(L, sidx, RTLD_DEFAULT);
  lua_setfield(L, -2, "C");
  pushptr(L, S, S->db->t_voidp, NULL);
  lua_setfield(L, -2, "NULL");
  char err[128];
  int vla, st = cparse_type(S->db, "int (*)(void)", NULL, 0, &vla, err, sizeof err);
  pushptr(L, S, st, (void *)(intptr_t)lasync_ffi_last_status);
  lua_setfield(L, -2, "last_status_fn");
  lua_pushliteral(L, "Linux");
  lua_setfield(L, -2, "os");
  lua_pushliteral(L, "x64");
  lua_setfield(L, -2, "arch");
  return 1;
}
