/* ffi_int.h - internals of the lasync libffi bridge: the C type database, the cdef
 * parser, cdata, calls and callbacks. Nothing here is public. */
#ifndef LASYNC_FFI_INT_H
#define LASYNC_FFI_INT_H

#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

/* ---- the type database (ffi_types.c); no Lua in here, so the fuzzer can use it ---- */

typedef enum {
  CT_VOID, CT_BOOL, CT_INT, CT_FLOAT, CT_PTR, CT_ARRAY,
  CT_STRUCT, CT_UNION, CT_ENUM, CT_FUNC
} ctkind;

#define CTF_CONST    0x01  /* const-qualified */
#define CTF_UNSIGNED 0x02  /* unsigned integer */
#define CTF_CHAR     0x04  /* plain char: strings convert */
#define CTF_VARARG   0x08  /* function takes ... */
#define CTF_VLA      0x10  /* array declared [?] */
#define CTF_LONG     0x20  /* long double (not supported in calls) */
#define CTF_ALIGNED  0x40  /* a typedef's __attribute__((aligned)): align is part of the key */

/* The largest alignment GCC accepts (aligned(n) with a larger n is an error). */
#define CT_MAXALIGN 0x10000000u

/* The largest C object: array and record sizes are kept in 32 bits and checked against it. */
#define CT_MAXSIZE 0x7fffffffu

typedef struct ctype {
  uint8_t kind;
  uint8_t flags;
  uint32_t size;       /* bytes; 0 when incomplete or void */
  uint32_t align;
  int base;            /* PTR target, ARRAY element, FUNC return, ENUM integer type */
  int aux;             /* STRUCT/UNION/ENUM record, FUNC first param in db->params */
  int64_t n;           /* ARRAY count (-1 unsized), FUNC parameter count */
  void *ffi;           /* lazily: ffi_type* for aggregates, struct fcif* for functions */
  int next;            /* intern hash chain */
} ctype;

typedef struct cfield {
  char *name;          /* NULL for an anonymous struct/union member */
  int type;
  uint32_t offset;
  uint32_t align;      /* from aligned(n) or _Alignas(n) on the member, else 0 */
  uint8_t packed;      /* __attribute__((packed)) on the member */
} cfield;

typedef struct crecord {
  char *tag;           /* NULL when anonymous */
  uint8_t kind;        /* CT_STRUCT, CT_UNION or CT_ENUM */
  uint8_t complete;
  uint8_t esize, eunsigned;  /* CT_ENUM: 4 or 8 bytes (0: 4), and unsigned, from its values */
  uint8_t packed;      /* __attribute__((packed)): every member aligned to 1 */
  uint32_t pack;       /* #pragma pack(n) in force at the definition, else 0 */
  uint32_t attralign;  /* __attribute__((aligned(n))) on the record, else 0 */
  int nfields, cap;
  cfield *fields;
  int self;            /* the unqualified type id naming this record */
  int line;            /* where it was completed, for conflict messages */
} crecord;

enum { SYM_TYPEDEF = 1, SYM_FUNC, SYM_VAR, SYM_CONST, SYM_TAG };

typedef struct csym {
  char *name;          /* tags are stored as "struct x", "union x", "enum x" */
  char *asmname;       /* from __asm__("name"), or NULL */
  uint8_t kind;
  uint8_t isnew;       /* added by the open transaction */
  int type;
  int64_t value;       /* SYM_CONST */
  struct csym *next;
} csym;

typedef struct cundo { uint8_t what; int idx; } cundo;

typedef struct ctdb {
  ctype *t; int nt, capt;
  crecord *r; int nr, capr;
  int *params; int np, capp;
  int *thash; int nthash;         /* intern chains, by hash of a type's key */
  csym **shash; int nshash, nsym;
  cundo *undo; int nundo, capundo;
  int intxn, sv_nt, sv_nr, sv_np;
  /* base type ids, filled by ctdb_new */
  int t_void, t_bool, t_char, t_i8, t_u8, t_i16, t_u16, t_i32, t_u32, t_i64, t_u64;
  int t_float, t_double, t_ldouble, t_voidp, t_cvoidp, t_charp, t_ccharp, t_int_enum;
} ctdb;

ctdb *ctdb_new(void);
void ctdb_free(ctdb *db);
/* Interns a derived or qualified type; returns its id. Never fails but on OOM (aborts). */
int ct_intern(ctdb *db, const ctype *key, const int *params);
int ct_ptr(ctdb *db, int target, int flags);
int ct_array(ctdb *db, int elem, int64_t n, int flags);
int ct_qual(ctdb *db, int id, int flags);
int ct_unqual(ctdb *db, int id);
int ct_newrecord(ctdb *db, int kind, const char *tag);
int ct_aligned(ctdb *db, int id, uint32_t align);
/* Appends a member (offset 0 until ct_layout); the result is valid until the next call. */
cfield *ct_addfield(ctdb *db, int rec, const char *name, int type);
/* Lays out a completed record; -1 (and nothing changed) when it exceeds CT_MAXSIZE. */
int ct_layout(ctdb *db, int rec, int line);
/* True when a struct or union is laid out as its members' types alone would place them
 * (no packed, aligned or #pragma pack effect): only those can be passed by value. */
int ct_natural(ctdb *db, int id);
const cfield *ct_findfield(ctdb *db, int id, const char *name, uint32_t *off);
int ct_compatible_ptr(ctdb *db, int to, int from);
/* The type of the flexible array member ending struct id (its offset in *off), or -1. */
int ct_flexarray(ctdb *db, int id, uint32_t *off);
/* Writes the C spelling of type id (with an optional declarator name) to buf. */
size_t ct_tostring(ctdb *db, int id, const char *name, char *buf, size_t len);
csym *ct_findsym(ctdb *db, const char *name);
csym *ct_addsym(ctdb *db, const char *name, int kind, int type);
void ct_begin(ctdb *db);
void ct_rollback(ctdb *db);
void ct_commit(ctdb *db);
static inline ctype *CT(ctdb *db, int id) { return &db->t[id]; }
static inline int ct_isint(const ctype *c) { return c->kind == CT_INT || c->kind == CT_ENUM || c->kind == CT_BOOL; }
/* Unsigned integer: by its flags, or for an enum by the range of its constants. */
static inline int ct_isunsigned(ctdb *db, const ctype *c) {
  if (c->kind == CT_ENUM) return db->r[c->aux].eunsigned;
  return (c->flags & CTF_UNSIGNED) != 0;
}
static inline int ct_isptrlike(const ctype *c) { return c->kind == CT_PTR || c->kind == CT_FUNC; }

/* ---- the parser (ffi_parse.c) ---- */

/* Parses declarations into db. On error returns -1 with a message in err, and the database
 * is as it was before the call. */
int cparse_cdef(ctdb *db, const char *src, char *err, size_t errlen);
/* Parses one abstract type ("int[?]", "struct s *", "$ *"). Returns the id or -1 with err.
 * `dollars` fills each '$' in order. *vla is set when the outermost array is [?]. */
int cparse_type(ctdb *db, const char *src, const int *dollars, int ndollars, int *vla,
                char *err, size_t errlen);

#endif
