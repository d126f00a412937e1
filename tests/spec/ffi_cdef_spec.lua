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
