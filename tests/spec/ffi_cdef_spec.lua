-- The cdef parser and the type system: declarations pasted from headers, the platform's
-- struct layout, redefinitions, and errors that name the line and the token.
local ffi = require "lasync.ffi"

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

describe("ffi.cdef", function()
  it("parses scalar types, typedefs, pointers and const", function()
    ffi.cdef [[
      typedef unsigned long size_t;           /* identical to the built-in one */
      typedef long long cdef_ll;
      typedef const char *cdef_str;
      typedef unsigned char cdef_u8;
      typedef signed short cdef_s16;
      typedef float cdef_f; typedef double cdef_d; typedef _Bool cdef_b;
    ]]
    assert.equal(8, ffi.sizeof("cdef_ll"))
    assert.equal(8, ffi.sizeof("cdef_str"))
    assert.equal(1, ffi.sizeof("cdef_u8"))
    assert.equal(2, ffi.sizeof("cdef_s16"))
    assert.equal(4, ffi.sizeof("cdef_f"))
    assert.equal(1, ffi.sizeof("cdef_b"))
    for _, t in ipairs { "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t",
                         "int64_t", "uint64_t", "intptr_t", "uintptr_t", "ptrdiff_t", "size_t", "ssize_t" } do
      assert.is_number(ffi.sizeof(t), t)
    end
    assert.equal("ctype<const char *>", tostring(ffi.typeof("cdef_str")))
    assert.equal("ctype<int * const *>", tostring(ffi.typeof("int *const *")))
  end)

  it("lays out structs and unions by the platform ABI, nested and with arrays", function()
    ffi.cdef [[
      struct cdef_inner { char c; double d; };
      struct cdef_outer {
        char a;
        struct cdef_inner in;
        short s[3];
        union { int i; char bytes[6]; };      /* anonymous member */
        int64_t tail;
      };
      union cdef_u { char c; int64_t l; short s[5]; };
    ]]
    assert.equal(16, ffi.sizeof("struct cdef_inner"))
    assert.equal(8, ffi.offsetof("struct cdef_inner", "d"))
    assert.equal(8, ffi.offsetof("struct cdef_outer", "in"))
    assert.equal(24, ffi.offsetof("struct cdef_outer", "s"))
    assert.equal(32, ffi.offsetof("struct cdef_outer", "i"))
    assert.equal(40, ffi.offsetof("struct cdef_outer", "tail"))
    assert.equal(48, ffi.sizeof("struct cdef_outer"))
    assert.equal(8, ffi.alignof("struct cdef_outer"))
    assert.equal(16, ffi.sizeof("union cdef_u"))
    assert.is_nil(ffi.offsetof("struct cdef_inner", "nope"))
  end)

  it("parses enums, arrays with constant expressions, function pointers and variadics", function()
    ffi.cdef [[
      enum cdef_color { CDEF_RED, CDEF_GREEN = 5, CDEF_BLUE, CDEF_MASK = (1 << 4) | CDEF_RED };
      typedef int cdef_arr[CDEF_BLUE * 2 + sizeof(int)];
      typedef int (*cdef_cmp)(const void *, const void *);
      typedef void (*cdef_handler)(int);
      cdef_handler cdef_signal(int sig, void (*fn)(int));
      int cdef_printf(const char *fmt, ...);
      extern int cdef_errno_var;
      struct cdef_flex { int n; double data[]; };
    ]]
    assert.equal(4 * 16, ffi.sizeof("cdef_arr"))
    assert.equal(4, ffi.sizeof("enum cdef_color"))
    assert.equal(8, ffi.sizeof("struct cdef_flex"))
    assert.equal("ctype<void (*(int, void (*)(int)))(int)>", tostring(ffi.typeof("cdef_handler (int, void (*)(int))")))
    assert.equal("ctype<int (*)(const void *, const void *)>", tostring(ffi.typeof("cdef_cmp")))
    assert.equal(16, ffi.C.CDEF_MASK)
    assert.equal(6, ffi.C.CDEF_BLUE)
  end)

  it("accepts identical redefinitions and names both sides of a conflict", function()
    ffi.cdef "struct cdef_dup { int a; }; typedef int cdef_t1; int cdef_fn(int);"
    ffi.cdef "struct cdef_dup { int a; }; typedef int cdef_t1; int cdef_fn(int x);"
    local e = err_of(ffi.cdef, "typedef long cdef_t1;")
    assert.matches("typedef int64_t cdef_t1", e, 1, true)
    assert.matches("earlier 'typedef int cdef_t1'", e, 1, true)
    e = err_of(ffi.cdef, "struct cdef_dup { long a; };")
    assert.matches("struct cdef_dup { int64_t a; }", e, 1, true)
    assert.matches("earlier 'struct cdef_dup { int a; }'", e, 1, true)
    e = err_of(ffi.cdef, "double cdef_fn(int);")
    assert.matches("double cdef_fn(int)", e, 1, true)
    assert.matches("int cdef_fn(int)", e, 1, true)
  end)

  it("reports malformed declarations with the line and the token", function()
    local e = err_of(ffi.cdef, "int ok1;\nint ok2;\nint bad(int;\n")
    assert.matches("ffi.cdef: line 3 near ';'", e, 1, true)
    e = err_of(ffi.cdef, "\n\nstruct s { int a; int a; };")
    assert.matches("line 3", e, 1, true)
    assert.matches("duplicate member 'a'", e, 1, true)
    assert.matches("near 'frob'", err_of(ffi.cdef, "frob x;"), 1, true)
    assert.matches("unknown type name 'frob'", err_of(ffi.cdef, "frob x;"), 1, true)
    assert.matches("division by zero", err_of(ffi.cdef, "int z[1/0];"), 1, true)
    assert.matches("negative array size", err_of(ffi.cdef, "int z[-1];"), 1, true)
    assert.matches("unfinished comment", err_of(ffi.cdef, "int a; /* never closed"), 1, true)
    assert.matches("bit fields are not supported", err_of(ffi.cdef, "struct bf { int a : 3; };"), 1, true)
    assert.matches("incomplete type", err_of(ffi.cdef, "struct cdef_fwd; struct hold { struct cdef_fwd f; };"), 1, true)
    assert.matches("ffi.typeof: line 1 near end of input: ']' expected", err_of(ffi.typeof, "int[3"), 1, true)
  end)

  it("rejects structs and unions too large for a C object (no 32-bit wrap)", function()
    local e = err_of(ffi.cdef, "\nstruct cdef_huge { char a[0x7fffffff]; char b[0x7fffffff]; char c[2]; int tail; };")
    assert.matches("ffi.cdef: line 2 near", e, 1, true)
    assert.matches("'struct cdef_huge' is too large", e, 1, true)
    e = err_of(ffi.cdef, "struct cdef_huge2 { char a[0x7fffffff]; int tail; };")  -- padding overflows
    assert.matches("'struct cdef_huge2' is too large", e, 1, true)
    e = err_of(ffi.cdef, "union cdef_hugeu { char a[0x7fffffff]; int i; };")
    assert.matches("'union cdef_hugeu' is too large", e, 1, true)
    e = err_of(ffi.cdef, "struct { char a[0x40000000]; char b[0x40000000]; } cdef_hugev;")
    assert.matches("'struct <anonymous>' is too large", e, 1, true)
    -- rolled back: the tag can be defined again, and the largest object still fits
    ffi.cdef "struct cdef_huge { char a[0x3fffffff]; char b[0x3fffffff]; char c; };"
    assert.equal(0x7fffffff, ffi.sizeof("struct cdef_huge"))
    assert.equal(0x7ffffffe, ffi.offsetof("struct cdef_huge", "c"))
  end)

  it("lays out aligned and packed members, structs and typedefs as GCC does on x86-64", function()
    -- every number below is what gcc prints for the same declarations
    ffi.cdef [[
      struct al_a { char c; int x __attribute__((aligned(16))); };
      struct al_b { char c; int x __attribute__((__aligned__(2))); };     /* cannot reduce */
      struct __attribute__((packed)) al_c { char c; int x; double d; };
      struct al_d { char c; int x; } __attribute__((packed));
      struct al_e { char c; int x __attribute__((packed)); double d; };
      struct __attribute__((packed)) al_f { char c; int x __attribute__((aligned(8))); };
      struct al_g { char c; int x; } __attribute__((aligned(32)));
      struct __attribute__((packed, aligned(4))) al_i { char c; int x; };
      typedef int al_i16 __attribute__((aligned(16)));
      typedef int al_i2 __attribute__((aligned(2)));                     /* a typedef can reduce */
      struct al_j { char c; al_i16 x; };
      struct al_k { char c; al_i2 x; };
      struct __attribute__((packed)) al_l { char c; al_i16 x; };
      struct al_u { char c; _Alignas(8) int x; };
      struct al_v { char c; _Alignas(double) char y; };
      union al_w { char c; int x __attribute__((aligned(16))); };
      typedef struct { char c; } __attribute__((aligned(8))) al_y;
      struct al_z { char c; al_y a[2]; };
      typedef char al_c4[3] __attribute__((aligned(4)));
      struct al_aa { char c; al_c4 arr; char e; };
      struct al_ab { char c; int __attribute__((aligned(8))) x, y; };    /* both members */
      struct al_ac { char c; int x __attribute__((aligned)); };           /* the largest: 16 */
      struct al_ad { char c; int x __attribute__((aligned(__alignof__(long long)))); };
      struct al_ap { char c; int * __attribute__((aligned(16))) p; };
      struct al_s { char c; struct al_d inner; };
    ]]
    local function layout(t, f)
      return { ffi.sizeof(t), ffi.alignof(t), f and ffi.offsetof(t, f) or nil }
    end
    assert.same({ 32, 16, 16 }, layout("struct al_a", "x"))
    assert.same({ 8, 4, 4 }, layout("struct al_b", "x"))
    assert.same({ 13, 1, 5 }, layout("struct al_c", "d"))
    assert.same({ 5, 1, 1 }, layout("struct al_d", "x"))
    assert.same({ 16, 8, 1 }, layout("struct al_e", "x"))
    assert.equal(8, ffi.offsetof("struct al_e", "d"))
    assert.same({ 16, 8, 8 }, layout("struct al_f", "x"))
    assert.same({ 32, 32 }, layout("struct al_g"))
    assert.same({ 8, 4, 1 }, layout("struct al_i", "x"))
    assert.same({ 4, 16 }, layout("al_i16"))
    assert.same({ 4, 2 }, layout("al_i2"))
    assert.same({ 32, 16, 16 }, layout("struct al_j", "x"))
    assert.same({ 6, 2, 2 }, layout("struct al_k", "x"))
    assert.same({ 5, 1, 1 }, layout("struct al_l", "x"))
    assert.same({ 16, 8, 8 }, layout("struct al_u", "x"))
    assert.same({ 16, 8, 8 }, layout("struct al_v", "y"))
    assert.same({ 16, 16 }, layout("union al_w"))
    assert.same({ 24, 8, 8 }, layout("struct al_z", "a"))
    assert.same({ 3, 4 }, layout("al_c4"))
    assert.same({ 8, 4, 4 }, layout("struct al_aa", "arr"))
    assert.equal(7, ffi.offsetof("struct al_aa", "e"))
    assert.same({ 24, 8, 16 }, layout("struct al_ab", "y"))
    assert.same({ 32, 16, 16 }, layout("struct al_ac", "x"))
    assert.same({ 16, 8, 8 }, layout("struct al_ad", "x"))
    assert.same({ 32, 16, 16 }, layout("struct al_ap", "p"))
    assert.same({ 6, 1, 1 }, layout("struct al_s", "inner"))
    -- an aligned typedef is still its type
    assert.is_true(ffi.istype("int", ffi.new("al_i16", 3)))
    -- a different layout is a different struct
    assert.matches("conflicts with earlier", err_of(ffi.cdef, "struct al_d { char c; int x; };"), 1, true)
  end)

  it("honours #pragma pack(n), push and pop, within one cdef", function()
    ffi.cdef [[
      typedef int pp_i16 __attribute__((aligned(16)));
      #pragma pack(push, 2)
      struct pp_n { char c; int x; double d; };
      struct pp_o { char c; int x __attribute__((aligned(8))); };   /* capped too */
      struct pp_p { char c; pp_i16 x; };
      #pragma pack(pop)
      #pragma pack(4)
      struct pp_q { char c; double d; long double ld; };
      struct pp_r { char c; double d; } __attribute__((aligned(16))); /* the struct's own is not */
      #pragma pack()
      struct pp_t { char c; double d; };
    ]]
    assert.same({ 14, 2, 2, 6 }, { ffi.sizeof("struct pp_n"), ffi.alignof("struct pp_n"),
                                   ffi.offsetof("struct pp_n", "x"), ffi.offsetof("struct pp_n", "d") })
    assert.same({ 6, 2 }, { ffi.sizeof("struct pp_o"), ffi.offsetof("struct pp_o", "x") })
    assert.same({ 6, 2 }, { ffi.sizeof("struct pp_p"), ffi.offsetof("struct pp_p", "x") })
    assert.same({ 28, 4, 12 }, { ffi.sizeof("struct pp_q"), ffi.alignof("struct pp_q"), ffi.offsetof("struct pp_q", "ld") })
    assert.same({ 16, 16, 4 }, { ffi.sizeof("struct pp_r"), ffi.alignof("struct pp_r"), ffi.offsetof("struct pp_r", "d") })
    assert.same({ 16, 8 }, { ffi.sizeof("struct pp_t"), ffi.offsetof("struct pp_t", "d") })
    ffi.cdef "#pragma pack(1)\nstruct pp_u { char c; int x; };"
    ffi.cdef "struct pp_v { char c; int x; };"  -- a new cdef starts unpacked
    assert.same({ 5, 8 }, { ffi.sizeof("struct pp_u"), ffi.sizeof("struct pp_v") })
    assert.matches("ffi.cdef: line 2 near '#pragma pack(3)': #pragma pack(3): the alignment must be 1, 2, 4, 8 or 16",
                   err_of(ffi.cdef, "int pp_ok;\n#pragma pack(3)\n"), 1, true)
    assert.matches("#pragma pack(pop) without a push", err_of(ffi.cdef, "#pragma pack(pop)\n"), 1, true)
    assert.matches("malformed #pragma pack", err_of(ffi.cdef, "#pragma pack(push, x)\n"), 1, true)
    ffi.cdef "#pragma once\n#pragma GCC visibility push(default)\nstruct pp_w { int a; };"  -- others ignored
  end)

  it("rejects bad alignments and arrays of elements they would misalign, as GCC does", function()
    assert.matches("ffi.cdef: line 1 near ')': requested alignment 3 is not a positive power of 2",
                   err_of(ffi.cdef, "struct ba1 { int x __attribute__((aligned(3))); };"), 1, true)
    assert.matches("requested alignment 0 is not a positive power of 2",
                   err_of(ffi.cdef, "struct ba2 { int x __attribute__((aligned(0))); };"), 1, true)
    assert.matches("requested alignment 536870912 exceeds the maximum",
                   err_of(ffi.cdef, "struct ba3 { int x __attribute__((aligned(1 << 29))); };"), 1, true)
    assert.matches("_Alignas cannot reduce the alignment of 'x'", err_of(ffi.cdef, "struct ba4 { _Alignas(2) int x; };"), 1, true)
    assert.matches("_Alignas on typedef 'ba5'", err_of(ffi.cdef, "typedef _Alignas(8) int ba5;"), 1, true)
    assert.matches("alignment of array elements is greater than element size",
                   err_of(ffi.cdef, "typedef int ba6 __attribute__((aligned(16))); struct ba7 { ba6 a[2]; };"), 1, true)
    assert.matches("unfinished attribute", err_of(ffi.cdef, "struct ba8 { int x __attribute__((aligned(8)"), 1, true)
  end)

  it("allocates objects of over-aligned types at their alignment", function()
    ffi.cdef "struct oa64 { char c; } __attribute__((aligned(64))); typedef struct oa64 oa64_t;"
    local function addr(cd) return ffi.tonumber(ffi.cast("uintptr_t", ffi.cast("void *", cd))) end
    for _ = 1, 20 do
      assert.equal(0, addr(ffi.new("struct oa64")) % 64)
      local v = ffi.new("oa64_t[?]", 3)
      assert.equal(0, addr(v) % 64)
      assert.equal(3, #v)
      assert.equal(192, ffi.sizeof(v))
    end
  end)

  it("evaluates constant expressions in C's types: unsigned arithmetic, conversions, shifts", function()
    -- the values gcc gives for the same enumerators
    local cases = {
      { "0xffffffffu", 4294967295 }, { "-1u", 4294967295 }, { "1u << 31", 2147483648 },
      { "(unsigned)-1 / 2", 2147483647 }, { "1 << 31", -2147483648 }, { "-1 / 2", 0 }, { "-7 % 3", -1 },
      { "-1u / 2", 2147483647 }, { "-1 < 0u", 0 }, { "-1 < 0", 1 }, { "-2147483647 - 1", -2147483648 },
      { "2147483648", 2147483648 }, { "-1 >> 1", -1 }, { "-1u >> 1", 2147483647 }, { "0x80000000 >> 31", 1 },
      { "65536u * 65536u", 0 }, { "(char)255", -1 }, { "(unsigned char)-1", 255 }, { "(short)0x18000", -32768 },
      { "sizeof(int) - 5", -1 }, { "~0u", 4294967295 }, { "1 ? -1 : 0u", 4294967295 }, { "0x100000000", 4294967296 },
      { "1LL << 40", 1099511627776 }, { "'\\xff'", -1 }, { "'\\101'", 65 }, { "-9223372036854775807 - 1", math.mininteger },
      { "(unsigned long long)-1", -1 }, { "3 - 5u > 0", 1 }, { "(unsigned short)-1 + 1", 65536 },
      { "3 << 30", -1073741824 }, { "1L << 63", math.mininteger }, { "(int)0x80000000", -2147483648 },
      { "1 ? 1 : 1 / 0", 1 }, { "0 && 1 / 0", 0 }, { "1 || 1 << 99", 1 }, { "(_Bool)256", 1 },
    }
    local src = {}
    for i, c in ipairs(cases) do src[i] = ("enum { CX%d = %s };"):format(i, c[1]) end
    ffi.cdef(table.concat(src, "\n"))
    for i, c in ipairs(cases) do assert.equal(c[2], ffi.C["CX" .. i], c[1]) end
    -- the enum's type follows from its values: unsigned int, and 64 bits
    ffi.cdef "enum ce_u { CE_U = 0xffffffffu }; enum ce_l { CE_L = 0x100000000 }; enum ce_s { CE_S1 = -1, CE_S2 = 0x80000000 };"
    assert.same({ 4, 8, 8 }, { ffi.sizeof("enum ce_u"), ffi.sizeof("enum ce_l"), ffi.sizeof("enum ce_s") })
    local e = ffi.new("enum ce_u[1]", { "CE_U" })
    assert.equal(4294967295, e[0])
    ffi.cdef "enum { CE_NEXT = CE_U + 1 };"  -- CE_U is an unsigned int: wraps to 0
    assert.equal(0, ffi.C.CE_NEXT)
  end)

  it("reports constant expressions C rejects, naming ffi.cdef", function()
    local function bad(ex, msg)
      assert.matches("ffi.cdef: line 1 near .-: " .. msg, err_of(ffi.cdef, ("enum { CB = %s };"):format(ex)), 1)
    end
    bad("1 / 0", "division by zero in constant expression")
    bad("1 % 0", "division by zero in constant expression")
    bad("2147483647 + 1", "integer overflow in constant expression")
    bad("65536 * 65536", "integer overflow in constant expression")
    bad("(-2147483647 - 1) / -1", "integer overflow in constant expression")
    bad("-(-9223372036854775807 - 1)", "integer overflow in constant expression")
    bad("1 << 32", "shift count 32 out of range for a 32%-bit operand")
    bad("1 << -1", "shift count %-1 out of range")
    bad("0x1ffffffffffffffff", "integer constant too large")
    bad("1uu", "malformed or floating%-point number")
    bad("(double)1", "cast to 'double' in an integer constant expression")
    assert.matches("negative array size", err_of(ffi.cdef, "typedef char cb1[-1];"), 1, true)
    assert.matches("array size 4294967295 too large", err_of(ffi.cdef, "typedef char cb2[-1u];"), 1, true)
    assert.matches("array size 18446744073709551615 too large", err_of(ffi.cdef, "typedef char cb3[sizeof(int) - 5];"), 1, true)
    assert.matches("array of 1073741824 'int' too large", err_of(ffi.cdef, "typedef int cb4[1u << 30];"), 1, true)
    assert.matches("array of 65536 'int [65536]' too large", err_of(ffi.cdef, "typedef int cb5[65536][65536];"), 1, true)
    assert.equal(0x7fffffff, ffi.sizeof("char[(unsigned)-1 / 2]"))
  end)

  it("declares static const integer constants, converted to their type", function()
    ffi.cdef [[
      static const int SC_A = 5, SC_B = SC_A * 2;
      static const unsigned char SC_C = 300;
      static const uint32_t SC_D = -1;
      static const int64_t SC_E = 1LL << 40;
      const int SC_F = 7;
      static const bool SC_G = 5;
      typedef char sc_arr[SC_B];
    ]]
    assert.same({ 5, 10, 44, 4294967295, 1099511627776, 7, 1 },
                { ffi.C.SC_A, ffi.C.SC_B, ffi.C.SC_C, ffi.C.SC_D, ffi.C.SC_E, ffi.C.SC_F, ffi.C.SC_G })
    assert.equal(10, ffi.sizeof("sc_arr"))
    ffi.cdef "static const int SC_A = 5;"  -- the same again is fine
    assert.matches("constant 'SC_A' = 6 conflicts", err_of(ffi.cdef, "static const int SC_A = 6;"), 1, true)
    assert.matches("initializers are only supported for integer constants in cdef",
                   err_of(ffi.cdef, "static int sc_var = 3;"), 1, true)
    assert.matches("initializers are only supported for integer constants in cdef",
                   err_of(ffi.cdef, "static const double sc_d = 3;"), 1, true)
  end)

  it("leaves nothing behind after an error", function()
    err_of(ffi.cdef, "typedef int cdef_partial1; struct cdef_partial2 { int x; }; int bad(;")
    -- neither declaration before the error exists now, so both can be defined differently
    ffi.cdef "typedef double cdef_partial1; struct cdef_partial2 { char c; };"
    assert.equal(8, ffi.sizeof("cdef_partial1"))
    assert.equal(1, ffi.sizeof("struct cdef_partial2"))
    -- a forward-declared struct whose body failed is still incomplete and can be completed
    ffi.cdef "struct cdef_later;"
    err_of(ffi.cdef, "struct cdef_later { int a; oops b; };")
    assert.is_nil(ffi.sizeof("struct cdef_later"))
    ffi.cdef "struct cdef_later { int a; int b; };"
    assert.equal(8, ffi.sizeof("struct cdef_later"))
  end)

  it("survives arbitrary input", function()
    local seed = 12345
    local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
    local pieces = { "struct", "union", "enum", "{", "}", "(", ")", "[", "]", "*", ";", ",", "int",
                     "char", "x", "y", "typedef", "const", "...", "=", "1", "0x7fffffffffffffff", "?",
                     "<<", "sizeof", "/*", "\"", "'", "\0", "\255", "__attribute__((", "$" }
    for _ = 1, 2000 do
      local t = {}
      for j = 1, rnd(20) + 1 do t[j] = pieces[rnd(#pieces) + 1] end
      local src = table.concat(t, " ")
      pcall(ffi.cdef, src)
      pcall(ffi.typeof, src)
    end
    ffi.cdef "struct cdef_after_fuzz { int ok; };"
    assert.equal(4, ffi.sizeof("struct cdef_after_fuzz"))
  end)
end)
