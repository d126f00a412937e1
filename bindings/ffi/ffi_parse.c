/* ffi_parse.c - the cdef parser: C declarations as users paste them from headers, into
 * the type database. Errors longjmp to the entry point, which rolls the database back, so
 * a malformed cdef leaves nothing behind. No Lua here: the fuzz target links it alone. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ffi_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  TK_EOF = 256, TK_NAME, TK_NUM, TK_STR, TK_ELLIPSIS, TK_SHL, TK_SHR, TK_LE, TK_GE,
  TK_EQ, TK_NE, TK_AND, TK_OR
};

#define MAXDEPTH 100
#define MAXNAME 128
#define MAXSUFFIX 32
#define MAXPACK 16

/* A TK_NUM carries its value and its C type: int, unsigned int, long or unsigned long. */
typedef struct lexstate {
  const char *p; int line; int tok; int64_t num; uint8_t numw64, numuns; const char *ts; size_t tl;
} lexstate;

typedef struct P {
  ctdb *db;
  lexstate lx;
  jmp_buf jb;
  char *err; size_t errlen;
  const int *dollars; int ndollars, idollar;
  int *ps; int nps, capps;      /* parameter stack for nested parameter lists */
  int depth;
  int typeonly;                 /* parsing ffi.typeof("...") rather than a cdef */
  int noeval;                   /* inside the operand of ?:, && or || that is not evaluated */
  uint32_t pack;                /* #pragma pack: the largest member alignment, 0 for none */
  uint32_t packstack[MAXPACK]; int npack;
} P;

/* Formats "line N near 'tok': message" and unwinds to the entry point. The token is
 * cut at 40 characters so that a huge malformed input gives a readable message. */
static void perr(P *ps, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lexstate *l = &ps->lx;
  if (l->tok == TK_EOF) snprintf(ps->err, ps->errlen, "line %d near end of input: %s", l->line, msg);
  else {
    int n = l->tl > 40 ? 40 : (int)l->tl;
    char tok[48]; int j = 0;
    for (int i = 0; i < n; i++) tok[j++] = (l->ts[i] >= 32 && l->ts[i] < 127) ? l->ts[i] : '?';
    tok[j] = 0;
    snprintf(ps->err, ps->errlen, "line %d near '%s': %s", l->line, tok, msg);
  }
  longjmp(ps->jb, 1);
}

static int isname(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9'); }

static void pragma_line(P *ps, const char *s);

/* Skips blanks, comments and preprocessor lines (but for #pragma pack); counts newlines. */
static void skip_space(P *ps) {
  lexstate *l = &ps->lx;
  int bol = l->p == NULL;
  for (;;) {
    char c = *l->p;
    if (c == '\n') { l->line++; l->p++; bol = 1; }
    else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') l->p++;
    else if (c == '/' && l->p[1] == '/') { while (*l->p && *l->p != '\n') l->p++; }
    else if (c == '/' && l->p[1] == '*') {
      const char *s = l->p; l->p += 2;
      while (*l->p && !(l->p[0] == '*' && l->p[1] == '/')) { if (*l->p == '\n') l->line++; l->p++; }
      if (!*l->p) { l->ts = s; l->tl = 2; l->tok = '/'; perr(ps, "unfinished comment"); }
      l->p += 2;
    } else if (c == '#') {  /* preprocessor line: ignored, with continuations */
      pragma_line(ps, l->p);
      while (*l->p && *l->p != '\n') { if (*l->p == '\\' && l->p[1] == '\n') { l->line++; l->p++; } l->p++; }
    } else break;
  }
  (void)bol;
}

/* An integer constant and its type, by C's rules: the first of int, unsigned int (not for
 * an unsuffixed decimal), long and unsigned long that holds the value, starting at
 * unsigned for a 'u' suffix and at long for an 'l' or 'll' one. */
static void lex_number(P *ps) {
  lexstate *l = &ps->lx;
  const char *s = l->p;
  uint64_t v = 0;
  int base = 10, big = 0;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { base = 16; s += 2; }
  else if (s[0] == '0') base = 8;
  int any = 0;
  for (;; s++) {
    int d;
    if (*s >= '0' && *s <= '9') d = *s - '0';
    else if (base == 16 && *s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
    else if (base == 16 && *s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
    else break;
    if (d >= base) { l->ts = l->p; l->tl = (size_t)(s - l->p + 1); perr(ps, "bad digit in number"); }
    if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) big = 1;
    v = v * (uint64_t)base + (uint64_t)d;
    any = 1;
  }
  if (base == 16 && !any) { l->ts = l->p; l->tl = (size_t)(s - l->p); perr(ps, "malformed number"); }
  /* the suffix: u or U at most once, before or after l, L, ll or LL */
  const char *suf = s;
  while (*s == 'u' || *s == 'U' || *s == 'l' || *s == 'L') s++;
  size_t n = (size_t)(s - suf);
  int nu = n && (suf[0] == 'u' || suf[0] == 'U' || suf[n - 1] == 'u' || suf[n - 1] == 'U');
  const char *ls = suf + (nu && (suf[0] == 'u' || suf[0] == 'U'));
  size_t nl = n - (size_t)nu;
  int badsuf = nl > 2 || (nl == 2 && (ls[0] != ls[1] || ls[0] == 'u' || ls[0] == 'U')) ||
               (nl == 1 && ls[0] != 'l' && ls[0] != 'L');
  l->ts = l->p; l->tl = (size_t)(s - l->p);
  if (*s == '.' || *s == 'e' || *s == 'E' || isname((unsigned char)*s) || badsuf) {
    while (isname((unsigned char)*s) || *s == '.') s++;
    l->tl = (size_t)(s - l->p);
    perr(ps, "malformed or floating-point number (only integer constants are allowed)");
  }
  if (big) perr(ps, "integer constant too large");
  if (!nl && v <= INT32_MAX && !nu) l->numw64 = 0, l->numuns = 0;
  else if (!nl && v <= UINT32_MAX && (nu || base != 10)) l->numw64 = 0, l->numuns = 1;
  else if (v <= INT64_MAX && !nu) l->numw64 = 1, l->numuns = 0;
  else l->numw64 = 1, l->numuns = 1;  /* a decimal this large is unsigned, as GCC has it */
  l->num = (int64_t)v;
  l->p = s;
  l->tok = TK_NUM;
}

/* Reads one escape or plain character of a char or string literal. */
static int lex_char(P *ps, const char **sp) {
  const char *s = *sp;
  int c = (unsigned char)*s++;
  if (c == '\\') {
    c = (unsigned char)*s++;
    switch (c) {
    case 'n': c = '\n'; break; case 't': c = '\t'; break; case 'r': c = '\r'; break;
    case '0': c = 0; break; case 'a': c = 7; break; case 'b': c = 8; break;
    case 'f': c = 12; break; case 'v': c = 11; break;
    case 0: ps->lx.tl = 1; perr(ps, "unfinished literal"); break;
    case 'x': {
      int n = 0;
      for (c = 0;; s++, n++) {
        int d = *s >= '0' && *s <= '9' ? *s - '0' : (*s | 32) >= 'a' && (*s | 32) <= 'f' ? (*s | 32) - 'a' + 10 : -1;
        if (d < 0) break;
        c = (c * 16 + d) & 0xfff;  /* only the low 8 bits count; bounded against overflow */
      }
      if (!n) perr(ps, "\\x used with no following hex digits");
      break;
    }
    default:
      if (c >= '0' && c <= '7') {  /* up to three octal digits */
        c -= '0';
        for (int n = 1; n < 3 && *s >= '0' && *s <= '7'; n++) c = c * 8 + (*s++ - '0');
      }
      break;
    }
  }
  *sp = s;
  return c;
}

static void next(P *ps) {
  lexstate *l = &ps->lx;
  skip_space(ps);
  const char *s = l->p;
  l->ts = s;
  l->tl = 1;
  unsigned char c = (unsigned char)*s;
  if (!c) { l->tok = TK_EOF; l->tl = 0; return; }
  if (isname(c) && !(c >= '0' && c <= '9')) {
    while (isname((unsigned char)*s)) s++;
    l->tl = (size_t)(s - l->p); l->p = s; l->tok = TK_NAME;
    if (l->tl >= MAXNAME) perr(ps, "identifier too long");
    return;
  }
  if (c >= '0' && c <= '9') { lex_number(ps); return; }
  if (c == '\'') {
    s++;
    if (*s == '\'' || !*s) perr(ps, "empty character constant");
    l->num = (int8_t)lex_char(ps, &s);  /* an int with the value of a (signed) char */
    l->numw64 = l->numuns = 0;
    if (*s != '\'') perr(ps, "unfinished character constant");
    l->p = s + 1; l->tl = (size_t)(l->p - l->ts); l->tok = TK_NUM;
    return;
  }
  if (c == '"') {
    s++;
    while (*s && *s != '"' && *s != '\n') lex_char(ps, &s);
    if (*s != '"') perr(ps, "unfinished string");
    l->p = s + 1; l->tl = (size_t)(l->p - l->ts); l->tok = TK_STR;
    return;
  }
  static const struct { const char *s; int t; } two[] = {
    { "...", TK_ELLIPSIS }, { "<<", TK_SHL }, { ">>", TK_SHR }, { "<=", TK_LE }, { ">=", TK_GE },
    { "==", TK_EQ }, { "!=", TK_NE }, { "&&", TK_AND }, { "||", TK_OR },
  };
  for (size_t i = 0; i < sizeof two / sizeof two[0]; i++) {
    size_t n = strlen(two[i].s);
    if (strncmp(s, two[i].s, n) == 0) { l->p = s + n; l->tl = n; l->tok = two[i].t; return; }
  }
  if (!strchr("{}()[];,*=+-/%<>&|^~!?:.$", c) || c < 32 || c >= 127) perr(ps, "unexpected character");
  l->p = s + 1;
  l->tok = c;
}

static int is(P *ps, const char *kw) {
  return ps->lx.tok == TK_NAME && ps->lx.tl == strlen(kw) && memcmp(ps->lx.ts, kw, ps->lx.tl) == 0;
}

static int accept(P *ps, int tok) {
  if (ps->lx.tok != tok) return 0;
  next(ps);
  return 1;
}

static void expect(P *ps, int tok, const char *what) {
  if (ps->lx.tok != tok) perr(ps, "'%s' expected", what);
  next(ps);
}

static void tokname(P *ps, char *buf) {
  memcpy(buf, ps->lx.ts, ps->lx.tl);
  buf[ps->lx.tl] = 0;
}

static void enter(P *ps) { if (++ps->depth > MAXDEPTH) perr(ps, "declaration nested too deeply"); }

/* A value of an integer constant expression in its C type: v holds the value (sign
 * extended when signed) and the type is int, unsigned int, long or unsigned long, as
 * the usual arithmetic conversions make it; smaller types are promoted to int. */
typedef struct cval { uint64_t v; uint8_t w64, uns; } cval;

/* What the attributes around a declaration said: the last and the largest aligned(n)
 * (a record takes the last, a member the largest, as GCC does), packed, and whether an
 * _Alignas was among them. */
typedef struct attrs { uint32_t last, max; uint8_t packed, alignas; } attrs;

static cval expr(P *ps);
static int is_type_start_kw(P *ps, int keyword_only);
static int parse_specs(P *ps, int *storage, attrs *at);
static int declarator(P *ps, int base, char *name, int flags, int *vla);
static int type_name(P *ps, int *vla);
static void skip_parens(P *ps);

enum { ST_TYPEDEF = 1, ST_EXTERN = 2, ST_STATIC = 4 };
enum { D_ABSTRACT = 1, D_NAMED = 2, D_PARAM = 4, D_VLA = 8 };

/* The argument of aligned(n), __declspec(align(n)) or _Alignas(n): a power of 2 up to
 * GCC's limit (0 only for _Alignas, where it means no alignment). */
static uint32_t align_arg(P *ps, int zero_ok) {
  cval v = expr(ps);
  if (v.v == 0 && zero_ok) return 0;
  if ((!v.uns && (int64_t)v.v <= 0) || (v.v & (v.v - 1)))
    perr(ps, "requested alignment %lld is not a positive power of 2", (long long)v.v);
  if (v.v > CT_MAXALIGN) perr(ps, "requested alignment %llu exceeds the maximum %u", (unsigned long long)v.v, CT_MAXALIGN);
  return (uint32_t)v.v;
}

static void set_align(attrs *at, uint32_t a) {
  at->last = a;
  if (a > at->max) at->max = a;
}

/* Reads __attribute__((...)), __declspec(...), _Alignas(...) and __asm__("label") into
 * at: aligned and packed are honoured, other attributes skipped. The label (for symbol
 * lookup) goes to asmname when given. */
static void skip_attributes(P *ps, char *asmname, attrs *at) {
  attrs dummy;
  if (!at) { memset(&dummy, 0, sizeof dummy); at = &dummy; }
  for (;;) {
    if (is(ps, "__attribute__") || is(ps, "__attribute")) {
      next(ps);
      expect(ps, '(', "(");
      expect(ps, '(', "(");
      while (!accept(ps, ')')) {
        if (accept(ps, ',')) continue;
        if (ps->lx.tok != TK_NAME) perr(ps, ps->lx.tok == TK_EOF ? "unfinished attribute" : "attribute name expected");
        if (is(ps, "aligned") || is(ps, "__aligned__")) {
          next(ps);
          uint32_t a = 16;  /* the largest alignment of any x86-64 type, as GCC has it */
          if (accept(ps, '(')) { a = align_arg(ps, 0); expect(ps, ')', ")"); }
          set_align(at, a);
        } else if (is(ps, "packed") || is(ps, "__packed__")) {
          next(ps);
          at->packed = 1;
        } else {
          next(ps);
          if (ps->lx.tok == '(') skip_parens(ps);
        }
      }
      expect(ps, ')', ")");
    } else if (is(ps, "__declspec")) {
      next(ps);
      expect(ps, '(', "(");
      while (!accept(ps, ')')) {
        if (ps->lx.tok != TK_NAME) perr(ps, ps->lx.tok == TK_EOF ? "unfinished attribute" : "attribute name expected");
        int al = is(ps, "align");
        next(ps);
        if (al) { expect(ps, '(', "("); set_align(at, align_arg(ps, 0)); expect(ps, ')', ")"); }
        else if (ps->lx.tok == '(') skip_parens(ps);
      }
    } else if (is(ps, "_Alignas") || is(ps, "alignas")) {
      next(ps);
      expect(ps, '(', "(");
      uint32_t a = is_type_start_kw(ps, 0) ? CT(ps->db, type_name(ps, NULL))->align : align_arg(ps, 1);
      expect(ps, ')', ")");
      if (a > at->max) at->max = a;  /* never the typedef's: _Alignas does not apply to one */
      at->alignas = 1;
    } else if (is(ps, "__asm__") || is(ps, "__asm") || is(ps, "asm")) {
      next(ps);
      expect(ps, '(', "(");
      if (ps->lx.tok != TK_STR) perr(ps, "string expected in asm label");
      if (asmname) {
        size_t n = ps->lx.tl - 2 < MAXNAME - 1 ? ps->lx.tl - 2 : MAXNAME - 1;
        memcpy(asmname, ps->lx.ts + 1, n); asmname[n] = 0;
      }
      next(ps);
      expect(ps, ')', ")");
    } else if (is(ps, "__extension__") || is(ps, "__restrict") || is(ps, "__restrict__") ||
               is(ps, "restrict") || is(ps, "volatile") || is(ps, "__volatile__") ||
               is(ps, "__inline") || is(ps, "__inline__") || is(ps, "inline") ||
               is(ps, "_Noreturn") || is(ps, "__cdecl") || is(ps, "__thread") || is(ps, "register")) {
      next(ps);
    } else return;
  }
}

/* #pragma pack(n), pack(), pack(push[, n]) and pack(pop), as GCC and LuaJIT read them:
 * n (1, 2, 4, 8 or 16) caps the alignment of the members of the structs defined after
 * it. The state lasts for one cdef. Other pragmas are ignored, like any '#' line. */
static void pragma_line(P *ps, const char *line) {
  const char *s = line + 1;
  lexstate *l = &ps->lx;
#define BLANKS() while (*s == ' ' || *s == '\t') s++
#define WORD(w) (strncmp(s, w, sizeof w - 1) == 0 && !isname((unsigned char)s[sizeof w - 1]) ? (s += sizeof w - 1, 1) : 0)
  BLANKS();
  if (!WORD("pragma")) return;
  BLANKS();
  if (!WORD("pack")) return;
  l->ts = line; l->tl = strcspn(line, "\n"); l->tok = '#';
  BLANKS();
  if (*s++ != '(') perr(ps, "malformed #pragma pack");
  BLANKS();
  int push = 0, pop = 0, wantn = 1, haven = 0;
  unsigned long n = 0;
  if (WORD("push")) { push = 1; BLANKS(); wantn = *s == ','; s += wantn; BLANKS(); }
  else if (WORD("pop")) { pop = 1; wantn = 0; BLANKS(); }
  if (wantn && *s >= '0' && *s <= '9') {
    char *e;
    n = strtoul(s, &e, 10);
    s = e; haven = 1;
    BLANKS();
  }
  if (*s != ')' || (push && wantn && !haven)) perr(ps, "malformed #pragma pack");
  if (haven && (n == 0 || n > 16 || (n & (n - 1))))
    perr(ps, "#pragma pack(%lu): the alignment must be 1, 2, 4, 8 or 16", n);
  if (push) {
    if (ps->npack == MAXPACK) perr(ps, "#pragma pack(push) nested too deeply");
    ps->packstack[ps->npack++] = ps->pack;
  }
  if (pop) {
    if (ps->npack == 0) perr(ps, "#pragma pack(pop) without a push in this cdef");
    ps->pack = ps->packstack[--ps->npack];
  } else if (haven || !push) ps->pack = (uint32_t)n;
#undef BLANKS
#undef WORD
}

/* True when the current name token names a type (a keyword or a typedef). */
static int is_type_start_kw(P *ps, int keyword_only) {
  static const char *kw[] = { "void", "char", "short", "int", "long", "float", "double", "signed",
    "unsigned", "_Bool", "bool", "struct", "union", "enum", "const", "volatile", "__const",
    "__signed__", "__signed", "__extension__", "__attribute__", "__restrict", "restrict", "typedef",
    "extern", "static", "inline", "__inline", "__inline__", "register", "_Alignas", NULL };
  if (ps->lx.tok == '$') return 1;
  if (ps->lx.tok != TK_NAME) return 0;
  for (int i = 0; kw[i]; i++) if (is(ps, kw[i])) return 1;
  if (keyword_only) return 0;
  char nm[MAXNAME]; tokname(ps, nm);
  csym *s = ct_findsym(ps->db, nm);
  return s && s->kind == SYM_TYPEDEF;
}

static int is_type_start(P *ps) { return is_type_start_kw(ps, 0); }

/* ---- constant expressions: array sizes, enum values, static const initializers ---- */

/* v in the given type: truncated to 32 bits and extended by its signedness. */
static cval mkval(uint64_t v, int w64, int uns) {
  cval r = { v, (uint8_t)w64, (uint8_t)uns };
  if (!w64) r.v = uns ? (uint32_t)v : (uint64_t)(int64_t)(int32_t)v;
  return r;
}

/* The value of an object of integer type ct holding the bits v, promoted: what a cast
 * to ct, or a constant of type ct, gives in an expression. */
static cval of_type(P *ps, int ct, uint64_t v) {
  ctdb *db = ps->db;
  ctype *c = CT(db, ct);
  if (c->kind == CT_BOOL) return mkval(v != 0, 0, 0);
  int uns = ct_isunsigned(db, c), sh = 64 - 8 * (int)c->size;
  v = uns ? (v << sh) >> sh : (uint64_t)((int64_t)(v << sh) >> sh);
  if (c->size < 4) return mkval(v, 0, 0);
  return mkval(v, c->size == 8, uns);
}

/* The type of an enumeration constant: int when its value fits, else its enum's type,
 * as GCC gives it. */
static cval enum_const(P *ps, csym *s) {
  int uns = ps->db->r[CT(ps->db, s->type)->aux].eunsigned;  /* then the value is unsigned */
  if (uns ? (uint64_t)s->value <= INT32_MAX : s->value >= INT32_MIN && s->value <= INT32_MAX)
    return mkval((uint64_t)s->value, 0, 0);
  return of_type(ps, s->type, (uint64_t)s->value);
}

static int neg(cval a) { return !a.uns && (int64_t)a.v < 0; }

static void overflow(P *ps) { if (!ps->noeval) perr(ps, "integer overflow in constant expression"); }

/* A signed result that must fit its type, else the expression overflowed (C makes that
 * an error in a constant expression; unsigned arithmetic wraps instead). */
static cval checked(P *ps, int64_t v, int w64, int ovf) {
  if (ovf || (!w64 && (v < INT32_MIN || v > INT32_MAX))) overflow(ps);
  return mkval((uint64_t)v, w64, 0);
}

static cval unary(P *ps) {
  enter(ps);
  cval v = { 0, 0, 0 };
  if (accept(ps, '-')) {
    v = unary(ps);
    if (!v.uns && v.v == (v.w64 ? (uint64_t)INT64_MIN : (uint64_t)(int64_t)INT32_MIN)) overflow(ps);
    v = mkval(0 - v.v, v.w64, v.uns);
  } else if (accept(ps, '+')) v = unary(ps);
  else if (accept(ps, '~')) { v = unary(ps); v = mkval(~v.v, v.w64, v.uns); }
  else if (accept(ps, '!')) { v = unary(ps); v = mkval(v.v == 0, 0, 0); }
  else if (is(ps, "sizeof") || is(ps, "_Alignof") || is(ps, "__alignof__") || is(ps, "alignof")) {
    int al = !is(ps, "sizeof");
    next(ps);
    expect(ps, '(', "(");
    if (!is_type_start(ps)) perr(ps, "type expected in sizeof");
    int t = type_name(ps, NULL);
    ctype *c = CT(ps->db, t);
    if (!al && c->size == 0 && c->kind != CT_ARRAY) perr(ps, "sizeof of an incomplete type");
    v = mkval(al ? c->align : c->size, 1, 1);  /* size_t */
    expect(ps, ')', ")");
  } else if (ps->lx.tok == '(') {
    next(ps);
    if (is_type_start(ps)) {  /* a cast: (type) value */
      int t = type_name(ps, NULL);
      expect(ps, ')', ")");
      v = unary(ps);
      if (!ct_isint(CT(ps->db, t))) {
        char tn[160];
        ct_tostring(ps->db, t, NULL, tn, sizeof tn);
        perr(ps, "cast to '%s' in an integer constant expression", tn);
      }
      v = of_type(ps, t, v.v);
    } else { v = expr(ps); expect(ps, ')', ")"); }
  } else if (ps->lx.tok == TK_NUM) { v = mkval((uint64_t)ps->lx.num, ps->lx.numw64, ps->lx.numuns); next(ps); }
  else if (ps->lx.tok == TK_NAME) {
    char nm[MAXNAME]; tokname(ps, nm);
    csym *s = ct_findsym(ps->db, nm);
    if (!s || s->kind != SYM_CONST) perr(ps, "constant expression expected");
    v = CT(ps->db, s->type)->kind == CT_ENUM ? enum_const(ps, s) : of_type(ps, s->type, (uint64_t)s->value);
    next(ps);
  } else perr(ps, "constant expression expected");
  ps->depth--;
  return v;
}

static int binprec(int tok) {
  switch (tok) {
  case '*': case '/': case '%': return 10;
  case '+': case '-': return 9;
  case TK_SHL: case TK_SHR: return 8;
  case '<': case '>': case TK_LE: case TK_GE: return 7;
  case TK_EQ: case TK_NE: return 6;
  case '&': return 5;
  case '^': return 4;
  case '|': return 3;
  case TK_AND: return 2;
  case TK_OR: return 1;
  default: return 0;
  }
}

/* Both operands converted to their common type (C's usual arithmetic conversions: long
 * wins over int; unsigned wins at equal width; long also holds every unsigned int). */
static void common(cval *a, cval *b) {
  int w64 = a->w64 | b->w64;
  int uns = w64 ? (a->w64 && a->uns) || (b->w64 && b->uns) : a->uns | b->uns;
  *a = mkval(a->v, w64, uns);
  *b = mkval(b->v, w64, uns);
}

static cval binop(P *ps, int op, cval a, cval b) {
  if (op == TK_SHL || op == TK_SHR) {  /* the type of the left operand; the count in range */
    int bits = a.w64 ? 64 : 32;
    if (neg(b) || b.v >= (uint64_t)bits) {
      if (!ps->noeval) perr(ps, "shift count %lld out of range for a %d-bit operand", (long long)b.v, bits);
      return mkval(0, a.w64, a.uns);
    }
    if (op == TK_SHL) return mkval(a.v << b.v, a.w64, a.uns);  /* into the sign bit as GCC does */
    return mkval(a.uns ? a.v >> b.v : (uint64_t)((int64_t)a.v >> b.v), a.w64, a.uns);
  }
  common(&a, &b);
  int64_t x = (int64_t)a.v, y = (int64_t)b.v, r = 0;
  int w = a.w64, u = a.uns;
  switch (op) {
  case '*': case '+': case '-': {
    if (u) return mkval(op == '*' ? a.v * b.v : op == '+' ? a.v + b.v : a.v - b.v, w, 1);
    int ovf = op == '*' ? __builtin_mul_overflow(x, y, &r) : op == '+' ? __builtin_add_overflow(x, y, &r)
                        : __builtin_sub_overflow(x, y, &r);
    return checked(ps, r, w, ovf);
  }
  case '/': case '%':
    if (b.v == 0) {
      if (!ps->noeval) perr(ps, "division by zero in constant expression");
      return mkval(0, w, u);
    }
    if (u) return mkval(op == '/' ? a.v / b.v : a.v % b.v, w, 1);
    if (y == -1 && x == (w ? INT64_MIN : INT32_MIN)) { overflow(ps); return mkval(0, w, 0); }
    return mkval((uint64_t)(op == '/' ? x / y : x % y), w, 0);
  case '<': return mkval(u ? a.v < b.v : x < y, 0, 0);
  case '>': return mkval(u ? a.v > b.v : x > y, 0, 0);
  case TK_LE: return mkval(u ? a.v <= b.v : x <= y, 0, 0);
  case TK_GE: return mkval(u ? a.v >= b.v : x >= y, 0, 0);
  case TK_EQ: return mkval(a.v == b.v, 0, 0);
  case TK_NE: return mkval(a.v != b.v, 0, 0);
  case '&': return mkval(a.v & b.v, w, u);
  case '^': return mkval(a.v ^ b.v, w, u);
  default: return mkval(a.v | b.v, w, u);
  }
}

/* Precedence climbing over the C binary operators. The operand that && and || do not
 * evaluate is parsed without raising (1 || 1/0 is a constant, as in C). */
static cval binary(P *ps, int minprec) {
  enter(ps);
  cval a = unary(ps);
  int prec;
  while ((prec = binprec(ps->lx.tok)) >= minprec && prec > 0) {
    int op = ps->lx.tok;
    next(ps);
    if (op == TK_AND || op == TK_OR) {
      int skip = op == TK_AND ? a.v == 0 : a.v != 0;
      ps->noeval += skip;
      cval b = binary(ps, prec + 1);
      ps->noeval -= skip;
      a = mkval(op == TK_AND ? a.v && b.v : a.v || b.v, 0, 0);
    } else a = binop(ps, op, a, binary(ps, prec + 1));
  }
  ps->depth--;
  return a;
}

static cval expr(P *ps) {
  enter(ps);
  cval c = binary(ps, 1);
  if (accept(ps, '?')) {
    int t = c.v != 0;
    ps->noeval += !t;
    cval a = expr(ps);
    ps->noeval -= !t;
    expect(ps, ':', ":");
    ps->noeval += t;
    cval b = expr(ps);
    ps->noeval -= t;
    common(&a, &b);
    c = t ? a : b;
  }
  ps->depth--;
  return c;
}

/* ---- records ---- */

static void describe_record(ctdb *db, int rec, char *buf, size_t len) {
  crecord *r = &db->r[rec];
  size_t n = (size_t)snprintf(buf, len, "{");
  for (int i = 0; i < r->nfields && n < len; i++) {
    char t[160];
    ct_tostring(db, r->fields[i].type, r->fields[i].name, t, sizeof t);
    n += (size_t)snprintf(buf + n, len - n, " %s;", t);
  }
  if (n < len) snprintf(buf + n, len - n, " }");
}

static int same_fields(ctdb *db, int a, int b) {
  crecord *x = &db->r[a], *y = &db->r[b];
  if (x->nfields != y->nfields) return 0;
  for (int i = 0; i < x->nfields; i++) {
    cfield *f = &x->fields[i], *g = &y->fields[i];
    if (f->type != g->type || f->offset != g->offset) return 0;
    if ((f->name == NULL) != (g->name == NULL) || (f->name && strcmp(f->name, g->name))) return 0;
  }
  return CT(db, x->self)->size == CT(db, y->self)->size && CT(db, x->self)->align == CT(db, y->self)->align;
}

static void field_list(P *ps, int rec);
static void enum_list(P *ps, int rec);

/* struct/union/enum [tag] [{ body }]. A body for a tag that is already complete is parsed
 * into a scratch record and must match the first definition field by field. */
static int parse_record(P *ps, int kind) {
  char tag[MAXNAME + 8], key[MAXNAME + 16];
  const char *kw = kind == CT_STRUCT ? "struct" : kind == CT_UNION ? "union" : "enum";
  next(ps);
  attrs at = { 0 };
  skip_attributes(ps, NULL, &at);
  int rec = -1, line = ps->lx.line;
  tag[0] = 0;
  if (ps->lx.tok == TK_NAME) {
    tokname(ps, tag);
    snprintf(key, sizeof key, "%s %s", kw, tag);
    csym *s = ct_findsym(ps->db, key);
    if (s) rec = CT(ps->db, s->type)->aux;
    else {
      rec = ct_newrecord(ps->db, kind, tag);
      ct_addsym(ps->db, key, SYM_TAG, ps->db->r[rec].self);
    }
    next(ps);
  } else if (ps->lx.tok != '{') perr(ps, "'{' or name expected after '%s'", kw);
  if (ps->lx.tok != '{') return ps->db->r[rec].self;
  next(ps);
  int target = rec;
  if (rec < 0 || ps->db->r[rec].complete) target = ct_newrecord(ps->db, kind, NULL);
  uint32_t pack = ps->pack;
  if (kind == CT_ENUM) enum_list(ps, target);
  else field_list(ps, target);
  skip_attributes(ps, NULL, &at);
  if (kind != CT_ENUM) {
    crecord *r = &ps->db->r[target];
    r->packed = at.packed;
    r->attralign = at.last;
    r->pack = pack;
  }
  if (ct_layout(ps->db, target, line) < 0)
    perr(ps, "'%s %s' is too large (more than %u bytes)", kw, tag[0] ? tag : "<anonymous>", CT_MAXSIZE);
  if (target != rec && rec >= 0) {
    if (kind == CT_ENUM || same_fields(ps->db, rec, target)) return ps->db->r[rec].self;
    char a[200], b[200];
    describe_record(ps->db, target, a, sizeof a);
    describe_record(ps->db, rec, b, sizeof b);
    perr(ps, "'%s %s %s' conflicts with earlier '%s %s %s' (line %d)", kw, tag, a, kw, tag, b,
         ps->db->r[rec].line);
  }
  return ps->db->r[target].self;
}

/* The members of a struct or union. Attributes before the type apply to every member it
 * declares, those after a declarator to that member alone. */
static void field_list(P *ps, int rec) {
  enter(ps);
  while (!accept(ps, '}')) {
    if (accept(ps, ';')) continue;
    int storage = 0;
    attrs sa = { 0 };
    int base = parse_specs(ps, &storage, &sa);
    if (storage) perr(ps, "storage class in a struct member");
    if (ps->lx.tok == ';') {
      ctype *b = CT(ps->db, base);
      if ((b->kind == CT_STRUCT || b->kind == CT_UNION) && ps->db->r[b->aux].tag == NULL) {
        cfield *f = ct_addfield(ps->db, rec, NULL, base);
        f->align = sa.max; f->packed = sa.packed;
      }
      next(ps);
      continue;
    }
    for (;;) {
      char name[MAXNAME];
      attrs da = sa;
      int t = declarator(ps, base, name, D_NAMED, NULL);
      skip_attributes(ps, NULL, &da);
      ctype *c = CT(ps->db, t);
      if (ps->lx.tok == ':') perr(ps, "bit fields are not supported");
      if (c->kind == CT_FUNC) perr(ps, "member '%s' has function type", name);
      if (c->kind == CT_VOID || ((c->kind == CT_STRUCT || c->kind == CT_UNION) && !ps->db->r[c->aux].complete))
        perr(ps, "member '%s' has incomplete type", name);
      crecord *r = &ps->db->r[rec];
      for (int i = 0; i < r->nfields; i++)
        if (r->fields[i].name && strcmp(r->fields[i].name, name) == 0) perr(ps, "duplicate member '%s'", name);
      if (r->nfields && CT(ps->db, r->fields[r->nfields - 1].type)->kind == CT_ARRAY &&
          CT(ps->db, r->fields[r->nfields - 1].type)->n < 0)
        perr(ps, "flexible array member must be last");
      if (da.alignas && da.max && da.max < c->align)
        perr(ps, "_Alignas cannot reduce the alignment of '%s'", name);
      cfield *f = ct_addfield(ps->db, rec, name, t);
      f->align = da.max; f->packed = da.packed;
      if (accept(ps, ',')) continue;
      expect(ps, ';', ";");
      break;
    }
  }
  ps->depth--;
}

/* The constants of an enum decide its integer type, as GCC does: int when they all fit,
 * else unsigned int when none is negative, else a 64-bit type. */
static void enum_list(P *ps, int rec) {
  cval v = mkval(0, 0, 0);
  int64_t lo = 0;
  uint64_t hi = 0;
  int type = ps->db->r[rec].self, first = 1;
  ps->db->r[rec].esize = ps->db->r[rec].eunsigned = 0;
  while (!accept(ps, '}')) {
    char name[MAXNAME];
    if (ps->lx.tok != TK_NAME) perr(ps, "enumerator name expected");
    tokname(ps, name);
    next(ps);
    if (accept(ps, '=')) v = expr(ps);
    else if (!first) {  /* one more than the previous value, in whichever type holds it */
      if (!neg(v) && v.v == UINT64_MAX) perr(ps, "enumerator '%s' overflows the largest integer type", name);
      v = neg(v) || v.v != INT64_MAX ? mkval(v.v + 1, 1, v.uns && !neg(v)) : mkval(v.v + 1, 1, 1);
    }
    first = 0;
    if (neg(v)) { if ((int64_t)v.v < lo) lo = (int64_t)v.v; }
    else if (v.v > hi) hi = v.v;
    if (lo < 0 && hi > INT64_MAX) perr(ps, "enumerator values exceed the range of the largest integer type");
    crecord *r = &ps->db->r[rec];
    r->eunsigned = lo >= 0 && hi > INT32_MAX;
    r->esize = lo < INT32_MIN || hi > (lo < 0 ? (uint64_t)INT32_MAX : UINT32_MAX) ? 8 : 4;
    csym *s = ct_findsym(ps->db, name);
    if (s && (s->kind != SYM_CONST || s->value != (int64_t)v.v))
      perr(ps, "enumerator '%s' = %s%llu conflicts with an earlier declaration", name, neg(v) ? "-" : "",
           (unsigned long long)(neg(v) ? 0 - v.v : v.v));
    if (!s) { s = ct_addsym(ps->db, name, SYM_CONST, type); s->value = (int64_t)v.v; }
    if (!accept(ps, ',')) { expect(ps, '}', "}"); break; }
  }
}

/* ---- declaration specifiers ---- */

/* Reads the specifiers of one declaration: qualifiers, storage class, and exactly one
 * base type (keywords combined as C allows, a typedef name, a record or a '$'). */
static int parse_specs(P *ps, int *storage, attrs *at) {
  int nlong = 0, nshort = 0, sign = 0, quals = 0, type = -1, kwint = 0;
  const char *kw = NULL;
  ctdb *db = ps->db;
  enter(ps);
  for (;;) {
    skip_attributes(ps, NULL, at);
    if (ps->lx.tok == '$') {
      if (type >= 0 || kw) perr(ps, "two types in one declaration");
      if (ps->idollar >= ps->ndollars) perr(ps, "more '$' than arguments");
      type = ps->dollars[ps->idollar++];
      next(ps);
      continue;
    }
    if (ps->lx.tok != TK_NAME) break;
    if (is(ps, "const") || is(ps, "__const")) { quals |= CTF_CONST; next(ps); }
    else if (is(ps, "typedef")) { *storage |= ST_TYPEDEF; next(ps); }
    else if (is(ps, "extern")) { *storage |= ST_EXTERN; next(ps); }
    else if (is(ps, "static")) { *storage |= ST_STATIC; next(ps); }
    else if (is(ps, "signed") || is(ps, "__signed__") || is(ps, "__signed")) { if (sign) perr(ps, "duplicate sign"); sign = 1; next(ps); }
    else if (is(ps, "unsigned")) { if (sign) perr(ps, "duplicate sign"); sign = 2; next(ps); }
    else if (is(ps, "long")) { if (++nlong > 2) perr(ps, "too long"); next(ps); }
    else if (is(ps, "short")) { nshort++; next(ps); }
    else if (is(ps, "int")) { if (kwint++) perr(ps, "duplicate 'int'"); next(ps); }
    else if (is(ps, "void") || is(ps, "char") || is(ps, "float") || is(ps, "double") ||
             is(ps, "_Bool") || is(ps, "bool") || is(ps, "__int128")) {
      if (kw || type >= 0) perr(ps, "two types in one declaration");
      kw = is(ps, "void") ? "void" : is(ps, "char") ? "char" : is(ps, "float") ? "float" :
           is(ps, "double") ? "double" : is(ps, "__int128") ? "__int128" : "bool";
      next(ps);
    } else if (is(ps, "struct") || is(ps, "union") || is(ps, "enum")) {
      if (kw || type >= 0) perr(ps, "two types in one declaration");
      type = parse_record(ps, is(ps, "struct") ? CT_STRUCT : is(ps, "union") ? CT_UNION : CT_ENUM);
    } else {
      if (kw || type >= 0 || nlong || nshort || sign || kwint) break;
      char nm[MAXNAME]; tokname(ps, nm);
      csym *s = ct_findsym(db, nm);
      if (!s || s->kind != SYM_TYPEDEF) {
        perr(ps, "unknown type name '%s'", nm);
      }
      type = s->type;
      next(ps);
    }
  }
  int mods = nlong || nshort || sign || kwint;
  if (type >= 0) {
    if (mods) perr(ps, "invalid combination of type specifiers");
  } else if (kw && strcmp(kw, "__int128") == 0) perr(ps, "__int128 is not supported");
  else if (kw && strcmp(kw, "void") == 0) { if (mods) perr(ps, "invalid use of void"); type = db->t_void; }
  else if (kw && strcmp(kw, "bool") == 0) { if (mods) perr(ps, "invalid use of bool"); type = db->t_bool; }
  else if (kw && strcmp(kw, "float") == 0) { if (mods) perr(ps, "invalid float"); type = db->t_float; }
  else if (kw && strcmp(kw, "double") == 0) {
    if (nshort || sign || kwint || nlong > 1) perr(ps, "invalid double");
    type = nlong ? db->t_ldouble : db->t_double;
  } else if (kw) {  /* char */
    if (nlong || nshort || kwint) perr(ps, "invalid char");
    type = sign == 1 ? db->t_i8 : sign == 2 ? db->t_u8 : db->t_char;
  } else if (mods) {
    if (nshort && nlong) perr(ps, "both long and short");
    if (nshort) type = sign == 2 ? db->t_u16 : db->t_i16;
    else if (nlong) type = sign == 2 ? db->t_u64 : db->t_i64;
    else type = sign == 2 ? db->t_u32 : db->t_i32;
  } else perr(ps, "type expected");
  ps->depth--;
  return quals ? ct_qual(db, type, quals) : type;
}

/* ---- declarators ---- */

typedef struct suffix { int isfunc; int64_t n; int vla; int pstart, pcount, vararg; } suffix;

static void param_list(P *ps, suffix *sf) {
  sf->isfunc = 1;
  sf->pstart = ps->nps;
  sf->pcount = 0;
  sf->vararg = 0;
  if (is(ps, "void")) {  /* (void) */
    lexstate save = ps->lx;
    next(ps);
    if (accept(ps, ')')) return;
    ps->lx = save;
  }
  if (accept(ps, ')')) return;
  for (;;) {
    if (accept(ps, TK_ELLIPSIS)) {
      if (!sf->pcount) perr(ps, "'...' needs a named parameter before it");
      sf->vararg = 1;
      expect(ps, ')', ")");
      return;
    }
    int storage = 0;
    char name[MAXNAME];
    int base = parse_specs(ps, &storage, NULL);
    int t = declarator(ps, base, name, D_ABSTRACT | D_NAMED | D_PARAM, NULL);
    ctype *c = CT(ps->db, t);
    if (c->kind == CT_ARRAY) t = ct_ptr(ps->db, c->base, 0);
    else if (c->kind == CT_FUNC) t = ct_ptr(ps->db, t, 0);
    else if (c->kind == CT_VOID) perr(ps, "parameter has type void");
    if (ps->nps >= ps->capps) {
      ps->capps = ps->capps ? ps->capps * 2 : 32;
      int *np = realloc(ps->ps, sizeof(int) * (size_t)ps->capps);
      if (!np) perr(ps, "out of memory");
      ps->ps = np;
    }
    ps->ps[ps->nps++] = t;
    sf->pcount++;
    if (accept(ps, ',')) continue;
    expect(ps, ')', ")");
    return;
  }
}

/* Reads the [n] and (params) suffixes of a direct declarator, then applies them inside
 * out: `a[2][3]` is an array of 2 arrays of 3, `f(int)[2]` is rejected. */
static int suffixes(P *ps, int base, int flags, int *vla) {
  suffix sf[MAXSUFFIX];
  int n = 0;
  int pmark = ps->nps;
  for (;;) {
    if (n == MAXSUFFIX) perr(ps, "too many array or function suffixes");
    if (accept(ps, '[')) {
      sf[n] = (suffix){ 0 };
      if (ps->lx.tok == '?') {
        if (!(flags & D_VLA) || n) perr(ps, "'[?]' is only allowed outermost in ffi.new and ffi.typeof");
        next(ps);
        sf[n].vla = 1; sf[n].n = -1;
      } else if (ps->lx.tok == ']') sf[n].n = -1;
      else {
        cval v = expr(ps);
        if (neg(v)) perr(ps, "negative array size");
        if (v.v > CT_MAXSIZE) perr(ps, "array size %llu too large (more than %u)", (unsigned long long)v.v, CT_MAXSIZE);
        sf[n].n = (int64_t)v.v;
      }
      if (sf[n].n < 0 && n && !sf[n].vla) perr(ps, "only the first array dimension may be omitted");
      expect(ps, ']', "]");
      n++;
    } else if (ps->lx.tok == '(') {
      next(ps);
      param_list(ps, &sf[n]);
      n++;
    } else break;
  }
  int t = base;
  (void)flags;
  for (int i = n - 1; i >= 0; i--) {
    ctype *c = CT(ps->db, t);
    if (sf[i].isfunc) {
      if (c->kind == CT_ARRAY || c->kind == CT_FUNC) perr(ps, "function cannot return an array or function");
      ctype k = { .kind = CT_FUNC, .flags = (uint8_t)(sf[i].vararg ? CTF_VARARG : 0), .base = ct_unqual(ps->db, t),
                  .n = sf[i].pcount };
      t = ct_intern(ps->db, &k, sf[i].pcount ? ps->ps + sf[i].pstart : NULL);
    } else {
      if (c->kind == CT_FUNC) perr(ps, "array of functions");
      if (c->kind == CT_VOID || (c->size == 0 && !(c->kind == CT_STRUCT || c->kind == CT_UNION) && c->kind != CT_ARRAY))
        perr(ps, "array of incomplete type");
      if (c->kind == CT_ARRAY && c->n < 0) perr(ps, "array of unsized arrays");
      if (sf[i].n > 0 && c->size && (uint64_t)sf[i].n > CT_MAXSIZE / c->size) {
        char tn[160];
        ct_tostring(ps->db, t, NULL, tn, sizeof tn);
        perr(ps, "array of %lld '%s' too large (more than %u bytes)", (long long)sf[i].n, tn, CT_MAXSIZE);
      }
      if (c->align > 1 && c->size % c->align)  /* as GCC: the elements could not all be aligned */
        perr(ps, "alignment of array elements is greater than element size");
      if ((c->kind == CT_STRUCT || c->kind == CT_UNION) && !ps->db->r[c->aux].complete)
        perr(ps, "array of incomplete type");
      t = ct_array(ps->db, t, sf[i].n, sf[i].vla ? CTF_VLA : 0);
      if (sf[i].vla && vla) *vla = 1;
    }
  }
  ps->nps = pmark;
  return t;
}

/* True when '(' after the pointer part opens a nested declarator, as in (*fp)(int),
 * rather than a parameter list, as in the abstract int (int). */
static int nested_paren(P *ps) {
  lexstate save = ps->lx;
  next(ps);
  int r = ps->lx.tok == '*' || ps->lx.tok == '(' || ps->lx.tok == '[' || ps->lx.tok == '^' ||
          (ps->lx.tok == TK_NAME && !is_type_start(ps) && !is(ps, "void"));
  if (is(ps, "__attribute__") || is(ps, "__cdecl")) r = 1;
  ps->lx = save;
  return r;
}

static void skip_parens(P *ps) {
  int lvl = 0;
  do {
    if (ps->lx.tok == TK_EOF) perr(ps, "unbalanced parentheses");
    if (ps->lx.tok == '(') lvl++;
    if (ps->lx.tok == ')') lvl--;
    next(ps);
  } while (lvl > 0);
}

/* One declarator over a base type. Pointers bind first; for a parenthesised inner
 * declarator the outer suffixes are applied first and the inner one is then re-read
 * over that type (the lexer is rewound), which is how C's inside-out syntax reads. */
static int declarator(P *ps, int base, char *name, int flags, int *vla) {
  enter(ps);
  name[0] = 0;
  while (ps->lx.tok == '*' || ps->lx.tok == '^') {
    next(ps);
    base = ct_ptr(ps->db, base, 0);
    for (;;) {
      if (is(ps, "const") || is(ps, "__const")) { base = ct_qual(ps->db, base, CTF_CONST); next(ps); }
      else if (is(ps, "restrict") || is(ps, "__restrict") || is(ps, "__restrict__") || is(ps, "volatile")
               || is(ps, "__attribute__")) {
        attrs at = { 0 };  /* int *__attribute__((aligned(16))) p: the pointer is aligned */
        skip_attributes(ps, NULL, &at);
        if (at.last) base = ct_aligned(ps->db, base, at.last);
      } else break;
    }
  }
  skip_attributes(ps, NULL, NULL);
  int t;
  if (ps->lx.tok == '(' && nested_paren(ps)) {
    lexstate inner = ps->lx;
    skip_parens(ps);
    t = suffixes(ps, base, flags & ~D_VLA, vla);
    lexstate after = ps->lx;
    ps->lx = inner;
    next(ps);
    t = declarator(ps, t, name, flags & ~D_VLA, NULL);
    if (ps->lx.tok != ')') perr(ps, "')' expected");
    ps->lx = after;
  } else {
    if (ps->lx.tok == TK_NAME && !is_type_start_kw(ps, 1)) {
      if (!(flags & D_NAMED)) perr(ps, "unexpected name in a type");
      tokname(ps, name);
      next(ps);
    } else if (!(flags & D_ABSTRACT)) perr(ps, "declaration name expected");
    t = suffixes(ps, base, flags, vla);
  }
  ps->depth--;
  return t;
}

static int type_name(P *ps, int *vla) {
  int storage = 0;
  char name[MAXNAME];
  int base = parse_specs(ps, &storage, NULL);
  if (storage) perr(ps, "storage class in a type name");
  return declarator(ps, base, name, D_ABSTRACT | (vla ? D_VLA : 0), vla);
}

/* ---- top level ---- */

static void define(P *ps, const char *name, int kind, int type, const char *asmname) {
  csym *s = ct_findsym(ps->db, name);
  if (s) {
    if (s->kind == kind && s->type == type) return;
    char a[200], b[200];
    const char *ka = kind == SYM_TYPEDEF ? "typedef " : kind == SYM_VAR ? "extern " : "";
    const char *kb = s->kind == SYM_TYPEDEF ? "typedef " : s->kind == SYM_VAR ? "extern " : "";
    ct_tostring(ps->db, type, name, a, sizeof a);
    if (s->kind == SYM_CONST) snprintf(b, sizeof b, "enumerator %s", name);
    else ct_tostring(ps->db, s->type, name, b, sizeof b);
    perr(ps, "'%s%s' conflicts with earlier '%s%s'", ka, a, kb, b);
  }
  s = ct_addsym(ps->db, name, kind, type);
  if (asmname && asmname[0]) s->asmname = strdup(asmname);
}

/* `static const int NAME = expr;`, as LuaJIT reads it: a constant (ffi.C.NAME), with the
 * value converted to its type, rather than a variable. */
static void const_init(P *ps, const char *name, int t) {
  ctype *c = CT(ps->db, t);
  if (!ct_isint(c) || !(c->flags & CTF_CONST))
    perr(ps, "initializers are only supported for integer constants in cdef (static const int %s = ...)", name);
  next(ps);
  cval v = expr(ps);
  int64_t val = (int64_t)of_type(ps, t, v.v).v;
  csym *s = ct_findsym(ps->db, name);
  if (s && (s->kind != SYM_CONST || s->value != val || ct_unqual(ps->db, s->type) != ct_unqual(ps->db, t)))
    perr(ps, "constant '%s' = %lld conflicts with an earlier declaration", name, (long long)val);
  if (!s) { s = ct_addsym(ps->db, name, SYM_CONST, t); s->value = val; }
}

static void declaration(P *ps) {
  if (accept(ps, ';')) return;
  int storage = 0;
  attrs sa = { 0 };
  int base = parse_specs(ps, &storage, &sa);
  if (accept(ps, ';')) return;
  if (ps->lx.tok == TK_EOF) perr(ps, "';' expected");
  for (;;) {
    char name[MAXNAME], asmname[MAXNAME];
    attrs da = { 0 };
    asmname[0] = 0;
    int t = declarator(ps, base, name, D_NAMED, NULL);
    skip_attributes(ps, asmname, &da);
    ctype *c = CT(ps->db, t);
    if (storage & ST_TYPEDEF) {  /* aligned(n): the last before the name or after it, the larger (GCC) */
      if (sa.alignas || da.alignas) perr(ps, "_Alignas on typedef '%s'", name);
      uint32_t al = sa.last > da.last ? sa.last : da.last;
      define(ps, name, SYM_TYPEDEF, al ? ct_aligned(ps->db, t, al) : t, NULL);
    } else if (ps->lx.tok == '=') const_init(ps, name, t);
    else if (c->kind == CT_FUNC) define(ps, name, SYM_FUNC, t, asmname);
    else {
      if (c->kind == CT_VOID) perr(ps, "variable '%s' has type void", name);
      define(ps, name, SYM_VAR, t, asmname);
    }
    if (ps->lx.tok == '=') perr(ps, "a typedef has no initializer");
    if (ps->lx.tok == '{') perr(ps, "function bodies are not supported in cdef");
    if (accept(ps, ',')) continue;
    expect(ps, ';', ";");
    return;
  }
}

static void init(P *ps, ctdb *db, const char *src, char *err, size_t errlen) {
  memset(ps, 0, sizeof *ps);
  ps->db = db;
  ps->err = err; ps->errlen = errlen;
  ps->lx.p = src;
  ps->lx.line = 1;
  ps->lx.ts = src;
}

int cparse_cdef(ctdb *db, const char *src, char *err, size_t errlen) {
  P ps;
  init(&ps, db, src, err, errlen);
  ct_begin(db);
  if (setjmp(ps.jb)) {
    free(ps.ps);
    ct_rollback(db);
    return -1;
  }
  next(&ps);
  while (ps.lx.tok != TK_EOF) declaration(&ps);
  free(ps.ps);
  ct_commit(db);
  return 0;
}

int cparse_type(ctdb *db, const char *src, const int *dollars, int ndollars, int *vla,
                char *err, size_t errlen) {
  P ps;
  init(&ps, db, src, err, errlen);
  ps.typeonly = 1;
  ps.dollars = dollars; ps.ndollars = ndollars;
  ct_begin(db);
  if (setjmp(ps.jb)) {
    free(ps.ps);
    ct_rollback(db);
    return -1;
  }
  *vla = 0;
  next(&ps);
  int t = type_name(&ps, vla);
  if (ps.lx.tok != TK_EOF) perr(&ps, "unexpected text after the type");
  if (ps.idollar != ndollars) perr(&ps, "%d '$' for %d arguments", ps.idollar, ndollars);
  free(ps.ps);
  ct_commit(db);
  return t;
}
