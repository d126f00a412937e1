/* ffi_types.c - the C type database of the FFI bridge: interned types, struct/union/enum
 * records laid out by the x86-64 System V (and generic LP64) rules, symbols, and the undo
 * log that lets a failed cdef leave the database as it was. No Lua and no libffi here. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ffi_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { U_COMPLETE = 1 };

/* Allocation failure inside the type database cannot be reported sensibly halfway
 * through an interned update, so it ends the process with a message, as Lua's own
 * allocator failure would in a C API call without a protected frame. */
static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) { fputs("lasync.ffi: out of memory\n", stderr); abort(); }
  return q;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(xrealloc(NULL, n), s, n);
}

#define GROW(arr, n, cap) do { if ((n) >= (cap)) { (cap) = (cap) ? (cap) * 2 : 16; \
  (arr) = xrealloc((arr), sizeof(*(arr)) * (size_t)(cap)); } } while (0)

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

/* The key of a type is everything but its size and caches; parameters count for
 * function types so that two prototypes with the same signature share one id. */
static uint32_t hash_key(const ctype *k, const int *params) {
  uint32_t h = (uint32_t)k->kind * 31u + k->flags;
  h = h * 1000003u ^ (uint32_t)k->base;
  h = h * 1000003u ^ (uint32_t)k->aux;
  h = h * 1000003u ^ (uint32_t)k->n;
  if (k->flags & CTF_ALIGNED) h = h * 1000003u ^ k->align;
  if (k->kind == CT_FUNC)
    for (int64_t i = 0; i < k->n; i++) h = h * 1000003u ^ (uint32_t)params[i];
  return h;
}

static int same_key(ctdb *db, const ctype *a, const ctype *k, const int *params) {
  if (a->kind != k->kind || a->flags != k->flags || a->base != k->base || a->n != k->n)
    return 0;
  if ((k->flags & CTF_ALIGNED) && a->align != k->align) return 0;
  if (k->kind == CT_FUNC)
    return k->n == 0 || memcmp(db->params + a->aux, params, sizeof(int) * (size_t)k->n) == 0;
  return a->aux == k->aux;
}

static void rehash(ctdb *db, int nbuckets) {
  free(db->thash);
  db->nthash = nbuckets;
  db->thash = xrealloc(NULL, sizeof(int) * (size_t)nbuckets);
  for (int i = 0; i < nbuckets; i++) db->thash[i] = -1;
  for (int id = 0; id < db->nt; id++) {
    ctype *c = &db->t[id];
    const int *ps = c->kind == CT_FUNC && c->n ? db->params + c->aux : NULL;
    uint32_t b = hash_key(c, ps) % (uint32_t)nbuckets;
    c->next = db->thash[b];
    db->thash[b] = id;
  }
}

/* Size and alignment of a derived type follow from its parts; records and base types
 * already carry theirs. */
static void fill_size(ctdb *db, ctype *c) {
  switch (c->kind) {
  case CT_PTR: case CT_FUNC: c->size = c->kind == CT_PTR ? sizeof(void *) : 0;
    c->align = sizeof(void *); break;
  case CT_ARRAY: {
    ctype *e = &db->t[c->base];
    c->align = e->align;
    c->size = c->n < 0 ? 0 : (uint32_t)((uint64_t)c->n * e->size);
    break;
  }
  case CT_STRUCT: case CT_UNION: case CT_ENUM: {
    ctype *u = &db->t[db->r[c->aux].self];
    c->size = u->size; c->align = u->align; break;
  }
  default: break;
  }
}

int ct_intern(ctdb *db, const ctype *key, const int *params) {
  uint32_t h = hash_key(key, params);
  if (db->nthash) {
    for (int id = db->thash[h % (uint32_t)db->nthash]; id >= 0; id = db->t[id].next)
      if (same_key(db, &db->t[id], key, params)) return id;
  }
  GROW(db->t, db->nt, db->capt);
  int id = db->nt++;
  ctype *c = &db->t[id];
  *c = *key;
  c->ffi = NULL;
  if (key->kind == CT_FUNC) {
    int at = db->np;
    for (int64_t i = 0; i < key->n; i++) { GROW(db->params, db->np, db->capp); db->params[db->np++] = params[i]; }
    c->aux = at;
  }
  if (key->size == 0 && key->align == 0) fill_size(db, c);
  if (db->nt > db->nthash) { rehash(db, db->nthash ? db->nthash * 4 : 256); return id; }
  uint32_t b = h % (uint32_t)db->nthash;
  c->next = db->thash[b];
  db->thash[b] = id;
  return id;
}

int ct_ptr(ctdb *db, int target, int flags) {
  ctype k = { .kind = CT_PTR, .flags = (uint8_t)flags, .base = target };
  return ct_intern(db, &k, NULL);
}

int ct_array(ctdb *db, int elem, int64_t n, int flags) {
  ctype k = { .kind = CT_ARRAY, .flags = (uint8_t)flags, .base = elem, .n = n };
  return ct_intern(db, &k, NULL);
}

/* The variant of a type that a typedef with __attribute__((aligned(n))) names: the same
 * size, its own alignment (which may be smaller, as GCC allows for typedefs). */
int ct_aligned(ctdb *db, int id, uint32_t align) {
  ctype *c = &db->t[id];
  if (c->kind == CT_FUNC || c->kind == CT_VOID) return id;
  ctype k = *c;
  k.flags |= CTF_ALIGNED;
  k.align = align;
  return ct_intern(db, &k, NULL);
}

int ct_qual(ctdb *db, int id, int flags) {
  ctype *c = &db->t[id];
  if ((c->flags & CTF_CONST) == (flags & CTF_CONST)) return id;
  if (c->kind == CT_ARRAY) {  /* a const array is an array of const elements */
    int a = ct_array(db, ct_qual(db, c->base, flags), c->n, c->flags & ~CTF_ALIGNED);
    return c->flags & CTF_ALIGNED ? ct_aligned(db, a, c->align) : a;
  }
  if (c->kind == CT_FUNC) return id;
  ctype k = *c;
  k.flags = (uint8_t)((c->flags & ~CTF_CONST) | (flags & CTF_CONST));
  k.size = c->size; k.align = c->align;
  return ct_intern(db, &k, NULL);
}

/* The type without const or a typedef's alignment: what C compares for compatibility. */
int ct_unqual(ctdb *db, int id) {
  ctype *c = &db->t[id];
  if (c->flags & CTF_ALIGNED) {
    ctype k = *c;
    k.flags &= (uint8_t)~(CTF_ALIGNED | (c->kind == CT_ARRAY ? 0 : CTF_CONST));
    k.size = k.align = 0;  /* found, not made: the type it was derived from exists */
    if (c->kind == CT_STRUCT || c->kind == CT_UNION || c->kind == CT_ENUM) return db->r[c->aux].self;
    return ct_intern(db, &k, NULL);
  }
  if (c->kind == CT_ARRAY) return id;
  return ct_qual(db, id, 0);
}

int ct_newrecord(ctdb *db, int kind, const char *tag) {
  GROW(db->r, db->nr, db->capr);
  int ri = db->nr++;
  crecord *r = &db->r[ri];
  memset(r, 0, sizeof *r);
  r->kind = (uint8_t)kind;
  r->tag = tag ? xstrdup(tag) : NULL;
  ctype k = { .kind = (uint8_t)kind, .aux = ri, .align = 1 };
  if (kind == CT_ENUM) { k.base = db->t_u32; k.size = 4; k.align = 4; }
  r->self = ct_intern(db, &k, NULL);
  return ri;
}

cfield *ct_addfield(ctdb *db, int rec, const char *name, int type) {
  crecord *r = &db->r[rec];
  GROW(r->fields, r->nfields, r->cap);
  cfield *f = &r->fields[r->nfields++];
  memset(f, 0, sizeof *f);
  f->name = name ? xstrdup(name) : NULL;
  f->type = type;
  return f;
}

static uint64_t round_up(uint64_t x, uint64_t a) { return a ? (x + a - 1) / a * a : x; }

/* The alignment a member gets, as GCC computes it: its type's, or 1 when packed; raised
 * by an aligned attribute on the member; then capped by #pragma pack. */
static uint32_t field_align(ctdb *db, const crecord *r, const cfield *f) {
  uint32_t a = r->packed || f->packed ? 1 : db->t[f->type].align;
  if (f->align > a) a = f->align;
  if (r->pack && a > r->pack) a = r->pack;
  return a ? a : 1;
}

/* Lays out a completed struct or union: each member at the next multiple of its
 * alignment, the whole padded to the largest member alignment (the psABI rule), and
 * propagates size and alignment to every qualified variant of the record's type (a
 * typedef's aligned variant keeps its own alignment). Offsets are computed in 64 bits: a
 * record larger than CT_MAXSIZE (the limit arrays have too) is refused with -1 and left
 * incomplete, instead of wrapping around. */
int ct_layout(ctdb *db, int rec, int line) {
  crecord *r = &db->r[rec];
  uint64_t off = 0, size = 0;
  uint32_t align = r->attralign ? r->attralign : 1;
  for (int i = 0; i < r->nfields; i++) {
    ctype *ft = &db->t[r->fields[i].type];
    uint32_t a = field_align(db, r, &r->fields[i]);
    if (a > align) align = a;
    if (r->kind == CT_UNION) { if (ft->size > size) size = ft->size; }
    else { off = round_up(off, a) + ft->size; size = off; }
    if (off > CT_MAXSIZE || size > CT_MAXSIZE) return -1;
  }
  if (r->kind == CT_ENUM) { size = r->esize ? r->esize : 4; align = (uint32_t)size; }
  else size = round_up(size, align);
  if (size > CT_MAXSIZE) return -1;
  off = 0;
  for (int i = 0; i < r->nfields; i++) {  /* every offset is below CT_MAXSIZE now */
    cfield *f = &r->fields[i];
    ctype *ft = &db->t[f->type];
    if (r->kind == CT_UNION) f->offset = 0;
    else { off = round_up(off, field_align(db, r, f)); f->offset = (uint32_t)off; off += ft->size; }
  }
  r->complete = 1;
  r->line = line;
  for (int id = 0; id < db->nt; id++) {
    ctype *c = &db->t[id];
    if ((c->kind == CT_STRUCT || c->kind == CT_UNION || c->kind == CT_ENUM) && c->aux == rec) {
      c->size = (uint32_t)size;
      if (!(c->flags & CTF_ALIGNED)) c->align = align;
    }
  }
  if (db->intxn) {
    GROW(db->undo, db->nundo, db->capundo);
    db->undo[db->nundo++] = (cundo){ U_COMPLETE, rec };
  }
  return 0;
}

/* The alignment libffi gives a type: natural, from the type alone. */
static uint32_t natural_align(ctdb *db, int id) {
  ctype *c = &db->t[id];
  if (c->kind == CT_ARRAY) return natural_align(db, c->base);
  if (c->kind == CT_STRUCT || c->kind == CT_UNION) return db->t[db->r[c->aux].self].align;
  if (c->flags & CTF_ALIGNED) return db->t[ct_unqual(db, id)].align;
  return c->align ? c->align : 1;
}

int ct_natural(ctdb *db, int id) {
  ctype *c = &db->t[ct_unqual(db, id)];
  crecord *r = &db->r[c->aux];
  uint64_t off = 0, size = 0;
  uint32_t align = 1;
  for (int i = 0; i < r->nfields; i++) {
    cfield *f = &r->fields[i];
    ctype *ft = &db->t[f->type];
    uint32_t a = natural_align(db, f->type);
    if ((ft->kind == CT_STRUCT || ft->kind == CT_UNION) && !ct_natural(db, f->type)) return 0;
    if (a > align) align = a;
    if (r->kind == CT_UNION) { if (ft->size > size) size = ft->size; continue; }
    off = round_up(off, a);
    if (off != f->offset) return 0;
    off += ft->size; size = off;
  }
  return align == c->align && round_up(size, align) == c->size;
}

const cfield *ct_findfield(ctdb *db, int id, const char *name, uint32_t *off) {
  ctype *c = &db->t[id];
  if (c->kind != CT_STRUCT && c->kind != CT_UNION) return NULL;
  crecord *r = &db->r[c->aux];
  for (int i = 0; i < r->nfields; i++) {
    cfield *f = &r->fields[i];
    if (f->name && strcmp(f->name, name) == 0) { *off += f->offset; return f; }
    if (!f->name) {
      uint32_t sub = *off + f->offset;
      const cfield *g = ct_findfield(db, f->type, name, &sub);
      if (g) { *off = sub; return g; }
    }
  }
  return NULL;
}

int ct_flexarray(ctdb *db, int id, uint32_t *off) {
  ctype *c = &db->t[id];
  if (c->kind != CT_STRUCT) return -1;
  crecord *r = &db->r[c->aux];
  if (!r->complete || r->nfields == 0) return -1;
  cfield *f = &r->fields[r->nfields - 1];
  ctype *ft = &db->t[f->type];
  if (ft->kind != CT_ARRAY || ft->n >= 0) return -1;
  if (off) *off = f->offset;
  return f->type;
}

/* Implicit pointer conversions LuaJIT allows, from a pointer to `from` to a pointer to
 * `to`: the target may gain qualifiers but never lose one (C must not write through a
 * pointer that was const, into a Lua string say); then to or from void *, between
 * pointers whose targets are the same type, and between pointers to same-sized integers
 * (char buffers are routinely passed as uint8_t * and the other way round). Below the
 * first level the qualifiers must match exactly, as in C: a `char **` could otherwise be
 * used to store a `const char *` where a `char *` was expected. Explicit casts skip this. */
static int compatible(ctdb *db, int to, int from, int same, int depth) {
  int qa = db->t[to].flags & CTF_CONST, qb = db->t[from].flags & CTF_CONST;
  if (db->t[to].kind == CT_ARRAY) qa = db->t[db->t[to].base].flags & CTF_CONST;
  if (db->t[from].kind == CT_ARRAY) qb = db->t[db->t[from].base].flags & CTF_CONST;
  if (same ? qa != qb : (qb && !qa)) return 0;
  int ua = ct_unqual(db, to), ub = ct_unqual(db, from);
  ctype *a = &db->t[ua], *b = &db->t[ub];
  if (a->kind == CT_VOID || b->kind == CT_VOID) return 1;
  if (ua == ub) return 1;
  if (a->kind == CT_INT && b->kind == CT_INT && a->size == b->size) return 1;
  if (a->kind == CT_PTR && b->kind == CT_PTR && depth < 64) return compatible(db, a->base, b->base, 1, depth + 1);
  return 0;
}

int ct_compatible_ptr(ctdb *db, int to, int from) {
  return compatible(db, to, from, 0, 0);
}

typedef struct sbuf { char *p; size_t n, len; } sbuf;

static void sb_put(sbuf *b, const char *s) {
  while (*s) { if (b->n + 1 < b->len) b->p[b->n] = *s; b->n++; s++; }
  if (b->len) b->p[b->n < b->len ? b->n : b->len - 1] = 0;
}

static const char *base_name(ctdb *db, const ctype *c, char *tmp) {
  switch (c->kind) {
  case CT_VOID: return "void";
  case CT_BOOL: return "bool";
  case CT_FLOAT: return c->flags & CTF_LONG ? "long double" : c->size == 4 ? "float" : "double";
  case CT_INT:
    if (c->flags & CTF_CHAR) return "char";
    if (c->size == 2) return c->flags & CTF_UNSIGNED ? "unsigned short" : "short";
    if (c->size == 4) return c->flags & CTF_UNSIGNED ? "unsigned int" : "int";
    sprintf(tmp, "%sint%u_t", c->flags & CTF_UNSIGNED ? "u" : "", (unsigned)c->size * 8);
    return tmp;
  default: {
    crecord *r = &db->r[c->aux];
    const char *kw = c->kind == CT_STRUCT ? "struct" : c->kind == CT_UNION ? "union" : "enum";
    if (r->tag) snprintf(tmp, 200, "%s %s", kw, r->tag);
    else snprintf(tmp, 200, "%s %d", kw, c->aux);
    return tmp;
  }
  }
}

/* Prints a type in C declarator syntax by wrapping the inner declarator outward from the
 * name: pointers prefix it (parenthesised before arrays and functions), arrays and
 * parameter lists suffix it. */
static void fmt_type(ctdb *db, int id, const char *inner, sbuf *out, int depth) {
  ctype *c = &db->t[id];
  size_t il = strlen(inner);
  char *buf = xrealloc(NULL, il + 64);
  if (depth > 64) { sb_put(out, "..."); free(buf); return; }
  switch (c->kind) {
  case CT_PTR: {
    ctype *t = &db->t[c->base];
    int paren = t->kind == CT_ARRAY || t->kind == CT_FUNC;
    sprintf(buf, "%s*%s%s%s%s", paren ? "(" : "", c->flags & CTF_CONST ? " const" : "",
            c->flags & CTF_CONST && il ? " " : "", inner, paren ? ")" : "");
    fmt_type(db, c->base, buf, out, depth + 1);
    break;
  }
  case CT_ARRAY:
    if (c->flags & CTF_VLA) sprintf(buf, "%s[?]", inner);
    else if (c->n < 0) sprintf(buf, "%s[]", inner);
    else sprintf(buf, "%s[%lld]", inner, (long long)c->n);
    fmt_type(db, c->base, buf, out, depth + 1);
    break;
  case CT_FUNC: {
    char ps[512]; sbuf pb = { ps, 0, sizeof ps }; ps[0] = 0;
    sb_put(&pb, "(");
    for (int64_t i = 0; i < c->n; i++) {
      if (i) sb_put(&pb, ", ");
      fmt_type(db, db->params[c->aux + i], "", &pb, depth + 1);
    }
    if (c->flags & CTF_VARARG) sb_put(&pb, c->n ? ", ..." : "...");
    else if (c->n == 0) sb_put(&pb, "void");
    sb_put(&pb, ")");
    buf = xrealloc(buf, il + strlen(ps) + 8);
    sprintf(buf, "%s%s", inner, ps);
    fmt_type(db, c->base, buf, out, depth + 1);
    break;
  }
  default: {
    char tmp[256];
    if (c->flags & CTF_CONST) sb_put(out, "const ");
    sb_put(out, base_name(db, c, tmp));
    if (il) { sb_put(out, " "); sb_put(out, inner); }
  }
  }
  free(buf);
}

size_t ct_tostring(ctdb *db, int id, const char *name, char *buf, size_t len) {
  sbuf b = { buf, 0, len };
  if (len) buf[0] = 0;
  fmt_type(db, id, name ? name : "", &b, 0);
  return b.n;
}

csym *ct_findsym(ctdb *db, const char *name) {
  if (!db->nshash) return NULL;
  for (csym *s = db->shash[hash_str(name) % (uint32_t)db->nshash]; s; s = s->next)
    if (strcmp(s->name, name) == 0) return s;
  return NULL;
}

csym *ct_addsym(ctdb *db, const char *name, int kind, int type) {
  if (db->nsym >= db->nshash) {
    int nb = db->nshash ? db->nshash * 4 : 256;
    csym **nh = xrealloc(NULL, sizeof(csym *) * (size_t)nb);
    memset(nh, 0, sizeof(csym *) * (size_t)nb);
    for (int i = 0; i < db->nshash; i++)
      for (csym *s = db->shash[i], *nx; s; s = nx) {
        nx = s->next;
        uint32_t b = hash_str(s->name) % (uint32_t)nb;
        s->next = nh[b]; nh[b] = s;
      }
    free(db->shash);
    db->shash = nh; db->nshash = nb;
  }
  csym *s = xrealloc(NULL, sizeof *s);
  memset(s, 0, sizeof *s);
  s->name = xstrdup(name);
  s->kind = (uint8_t)kind;
  s->type = type;
  uint32_t b = hash_str(name) % (uint32_t)db->nshash;
  s->next = db->shash[b]; db->shash[b] = s;
  db->nsym++;
  s->isnew = (uint8_t)db->intxn;
  return s;
}

static void free_sym(csym *s) { free(s->name); free(s->asmname); free(s); }

/* Opens a transaction: everything cdef adds from here can be taken back by
 * ct_rollback, so a failed cdef leaves the database as it was. */
void ct_begin(ctdb *db) {
  db->nundo = 0;
  db->intxn = 1;
  db->sv_nt = db->nt; db->sv_nr = db->nr; db->sv_np = db->np;
}

static void free_record(crecord *r) {
  for (int i = 0; i < r->nfields; i++) free(r->fields[i].name);
  free(r->fields);
  r->fields = NULL; r->nfields = r->cap = 0;
}

/* Undoes the open transaction: records that were completed go back to incomplete,
 * symbols added are unlinked, and types, records and parameter lists made since
 * ct_begin are dropped (nothing older can refer to them). */
void ct_rollback(ctdb *db) {
  int nt = db->sv_nt, nr = db->sv_nr;
  for (int i = db->nundo - 1; i >= 0; i--) {
    cundo u = db->undo[i];
    if (u.what != U_COMPLETE || u.idx >= nr) continue;
    free_record(&db->r[u.idx]);
    db->r[u.idx].complete = 0;
    db->r[u.idx].esize = db->r[u.idx].eunsigned = 0;
    for (int id = 0; id < nt; id++) {
      ctype *c = &db->t[id];
      int keep = c->flags & CTF_ALIGNED;
      if ((c->kind == CT_STRUCT || c->kind == CT_UNION) && c->aux == u.idx) { c->size = 0; if (!keep) c->align = 1; }
      if (c->kind == CT_ENUM && c->aux == u.idx) { c->size = 4; if (!keep) c->align = 4; }
    }
  }
  for (int i = 0; i < nr; i++)  /* a forward-declared record whose body failed */
    if (!db->r[i].complete && db->r[i].nfields) free_record(&db->r[i]);
  for (int b = 0; b < db->nshash; b++) {
    csym **pp = &db->shash[b];
    while (*pp) {
      csym *s = *pp;
      if (s->isnew) { *pp = s->next; free_sym(s); db->nsym--; }
      else pp = &s->next;
    }
  }
  for (int i = nr; i < db->nr; i++) { free_record(&db->r[i]); free(db->r[i].tag); }
  db->nt = nt; db->nr = nr; db->np = db->sv_np;
  rehash(db, db->nthash);
  db->nundo = 0;
  db->intxn = 0;
}

/* Closes the transaction, keeping what it added. */
void ct_commit(ctdb *db) {
  for (int b = 0; b < db->nshash; b++)
    for (csym *s = db->shash[b]; s; s = s->next) s->isnew = 0;
  db->nundo = 0;
  db->intxn = 0;
}

static int base_type(ctdb *db, int kind, int size, int flags) {
  ctype k = { .kind = (uint8_t)kind, .flags = (uint8_t)flags, .size = (uint32_t)size,
              .align = (uint32_t)(size ? size : 1), .aux = -1 - (int)db->nt };
  /* aux makes each base type a distinct key; qualified copies keep it */
  return ct_intern(db, &k, NULL);
}

static void builtin_typedef(ctdb *db, const char *name, int type) {
  ct_addsym(db, name, SYM_TYPEDEF, type);
}

ctdb *ctdb_new(void) {
  ctdb *db = xrealloc(NULL, sizeof *db);
  memset(db, 0, sizeof *db);
  db->t_void = base_type(db, CT_VOID, 0, 0);
  db->t[db->t_void].align = 1;
  db->t_bool = base_type(db, CT_BOOL, 1, CTF_UNSIGNED);
  db->t_char = base_type(db, CT_INT, 1, CTF_CHAR);
  db->t_i8 = base_type(db, CT_INT, 1, 0);
  db->t_u8 = base_type(db, CT_INT, 1, CTF_UNSIGNED);
  db->t_i16 = base_type(db, CT_INT, 2, 0);
  db->t_u16 = base_type(db, CT_INT, 2, CTF_UNSIGNED);
  db->t_i32 = base_type(db, CT_INT, 4, 0);
  db->t_u32 = base_type(db, CT_INT, 4, CTF_UNSIGNED);
  db->t_i64 = base_type(db, CT_INT, 8, 0);
  db->t_u64 = base_type(db, CT_INT, 8, CTF_UNSIGNED);
  db->t_float = base_type(db, CT_FLOAT, 4, 0);
  db->t_double = base_type(db, CT_FLOAT, 8, 0);
  db->t_ldouble = base_type(db, CT_FLOAT, 16, CTF_LONG);
  db->t_voidp = ct_ptr(db, db->t_void, 0);
  db->t_cvoidp = ct_ptr(db, ct_qual(db, db->t_void, CTF_CONST), 0);
  db->t_charp = ct_ptr(db, db->t_char, 0);
  db->t_ccharp = ct_ptr(db, ct_qual(db, db->t_char, CTF_CONST), 0);
  static const struct { const char *n; int off; } td[] = {
    { "int8_t", offsetof(ctdb, t_i8) }, { "uint8_t", offsetof(ctdb, t_u8) },
    { "int16_t", offsetof(ctdb, t_i16) }, { "uint16_t", offsetof(ctdb, t_u16) },
    { "int32_t", offsetof(ctdb, t_i32) }, { "uint32_t", offsetof(ctdb, t_u32) },
    { "int64_t", offsetof(ctdb, t_i64) }, { "uint64_t", offsetof(ctdb, t_u64) },
    { "intptr_t", offsetof(ctdb, t_i64) }, { "uintptr_t", offsetof(ctdb, t_u64) },
    { "ptrdiff_t", offsetof(ctdb, t_i64) }, { "size_t", offsetof(ctdb, t_u64) },
    { "ssize_t", offsetof(ctdb, t_i64) }, { "off_t", offsetof(ctdb, t_i64) },
    { "time_t", offsetof(ctdb, t_i64) }, { "wchar_t", offsetof(ctdb, t_i32) },
    { "intmax_t", offsetof(ctdb, t_i64) }, { "uintmax_t", offsetof(ctdb, t_u64) },
    { "va_list", offsetof(ctdb, t_voidp) }, { "__builtin_va_list", offsetof(ctdb, t_voidp) },
    { "__gnuc_va_list", offsetof(ctdb, t_voidp) }, { "socklen_t", offsetof(ctdb, t_u32) },
    { "pid_t", offsetof(ctdb, t_i32) }, { "uid_t", offsetof(ctdb, t_u32) },
    { "gid_t", offsetof(ctdb, t_u32) }, { "mode_t", offsetof(ctdb, t_u32) },
  };
  for (size_t i = 0; i < sizeof td / sizeof td[0]; i++)
    builtin_typedef(db, td[i].n, *(int *)((char *)db + td[i].off));
  return db;
}

void ctdb_free(ctdb *db) {
  if (!db) return;
  for (int b = 0; b < db->nshash; b++)
    for (csym *s = db->shash[b], *nx; s; s = nx) { nx = s->next; free_sym(s); }
  for (int i = 0; i < db->nr; i++) { free_record(&db->r[i]); free(db->r[i].tag); }
  free(db->shash); free(db->t); free(db->r); free(db->params); free(db->thash); free(db->undo);
  free(db);
}
