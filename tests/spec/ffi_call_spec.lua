-- Loading libraries and calling C functions through libffi, with the conversions LuaJIT
-- users expect, and the misuse cases.
local h = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "ffi_helper.lua")
local ffi, C = h.ffi, h.C

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

describe("ffi calls", function()
  it("converts numbers, booleans, strings and nil", function()
    assert.equal(5, C.fx_add(2, 3))
    assert.equal(5, C.fx_add(2.0, 3))
    assert.equal(-5, C.fx_neg8())
    assert.equal(0, C.fx_u16(65535))
    assert.is_true(C.fx_not(false))
    assert.is_false(C.fx_not(1))
    assert.equal(5.0, C.fx_scale(2.5, 2))
    assert.equal(0.75, C.fx_halff(1.5))
    assert.equal(5, C.fx_strlen("hello"))
    assert.equal("hello from C", ffi.string(C.fx_greet()))
    assert.is_nil(C.fx_null())  -- NULL pointers come back as nil
    assert.equal(1, C.fx_is_null(nil))
    assert.equal(0, C.fx_is_null("x"))
  end)

  it("passes and returns structs by value, unions, and arrays as pointers", function()
    local p = C.fx_make_point(3, 4)
    assert.same({ 3, 4, 5.5 }, { p.x, p.y, p.w })
    assert.equal(12.5, C.fx_point_sum(p))
    assert.equal(12.5, C.fx_point_sum({ x = 3, y = 4, w = 5.5 }))
    local r = C.fx_make_rect(2)
    assert.same({ 2, 4, "rect" }, { r.a.x, r.b.y, ffi.string(r.tag) })
    local pts = ffi.new("struct fx_point[3]", { { 1, 2 }, { 3, 4 }, { 5, 6 } })
    assert.equal(21, C.fx_sum_points(pts, 3))
    assert.equal(7, C.fx_union_bits(ffi.new("union fx_num", { 7 })))
    local buf = ffi.new("unsigned char[4]")
    C.fx_fill(buf, 4, 9)
    assert.equal(9, buf[3])
  end)

  it("calls variadic functions with Lua and cdata arguments", function()
    assert.equal(6, C.fx_sum_var(3, 1, 2, 3))
    assert.equal(3.75, C.fx_sum_doubles(2, 1.5, 2.25))
    assert.equal(3, C.fx_sum_var(2, ffi.new("int8_t", 1), true and 2))
    local out = ffi.new("char[32]")
    ffi.cdef "int snprintf(char *buf, size_t n, const char *fmt, ...);"
    ffi.C.snprintf(out, 32, "%s-%d-%.1f", "x", 42, 0.5)
    assert.equal("x-42-0.5", ffi.string(out))
  end)

  it("reads and writes extern variables", function()
    assert.equal("fixture", ffi.string(C.fx_name))
    assert.equal(3.5, C.fx_values[2])
    C.fx_counter = 99
    assert.equal(99, C.fx_counter)
    C.fx_values[0] = 8
    assert.equal(8, C.fx_values[0])
  end)

  it("finds the process's own symbols and loads libraries by name", function()
    ffi.cdef "size_t strlen(const char *s); double cos(double);"
    assert.equal(3, ffi.C.strlen("abc"))
    local z = ffi.load("z")
    ffi.cdef "const char *zlibVersion(void);"
    assert.matches("^1%.", ffi.string(z.zlibVersion()))
  end)

  it("keeps const: implicit conversions never drop a const qualifier", function()
    ffi.cdef [[
      char *strcpy(char *dst, const char *src);
      long strtol(const char *s, char **end, int base);
      void *memset(void *s, int c, size_t n);
    ]]
    local s = "abcdef"
    assert.matches("C function call: cannot convert 'const char *' to 'char *'",
                   err_of(ffi.C.strcpy, ffi.cast("const char *", s), "XX"), 1, true)
    assert.equal("abcdef", s)
    assert.matches("C function call: cannot convert 'string' to 'char *'", err_of(ffi.C.strcpy, "xxxxxx", "hi"), 1, true)
    assert.matches("C function call: cannot convert 'const char *[1]' to 'char **'",
                   err_of(ffi.C.strtol, "12", ffi.new("const char *[1]"), 10), 1, true)
    assert.matches("C function call: cannot convert 'char * const *' to 'char **'",
                   err_of(ffi.C.strtol, "12", ffi.cast("char * const *", ffi.new("char *[1]")), 10), 1, true)
    local buf = ffi.new("char[8]")
    assert.matches("C function call: cannot convert 'const void *' to 'void *'",
                   err_of(ffi.C.memset, ffi.cast("const void *", buf), 0, 1), 1, true)
    assert.matches("C function call: cannot convert 'const uint8_t [2]' to 'uint8_t *'",
                   err_of(C.fx_fill, ffi.new("const uint8_t[2]"), 2, 1), 1, true)
    local slot = ffi.new("char *[1]")
    assert.matches("cdata assignment: cannot convert 'const char *' to 'char *'",
                   err_of(function() slot[0] = ffi.cast("const char *", buf) end), 1, true)
    -- adding const, void *, same-sized integers, Lua strings for const char * and explicit
    -- casts all still convert
    assert.equal(12, ffi.C.strtol("12", ffi.new("char *[1]"), 10))
    assert.equal(12, ffi.C.strtol("12", nil, 10))
    assert.equal(5, C.fx_strlen(ffi.new("char[8]", "hello")))
    assert.equal(5, C.fx_strlen(ffi.cast("const uint8_t *", "hello")))
    assert.equal(0, C.fx_is_null(ffi.cast("const int *", buf)))
    ffi.C.strcpy(ffi.cast("char *", ffi.cast("const char *", buf)), "hi")
    assert.equal("hi", ffi.string(buf))
    assert.matches("ffi.copy: cannot write through 'const char *'", err_of(ffi.copy, ffi.cast("const char *", s), "XX"), 1, true)
    assert.matches("ffi.fill: cannot write through 'const uint8_t [2]'", err_of(ffi.fill, ffi.new("const uint8_t[2]"), 2), 1, true)
    assert.equal("abcdef", s)
    local cp = ffi.new("const char *[1]")
    cp[0] = buf
    assert.equal("hi", ffi.string(cp[0]))
  end)

  it("rejects misuse with errors naming the call", function()
    assert.matches("wrong number of arguments (expected 2, got 1)", err_of(C.fx_add, 1), 1, true)
    assert.matches("cannot convert 'string' to 'int'", err_of(C.fx_add, "1", 2), 1, true)
    assert.matches("cannot convert 'string' to 'uint8_t *'", err_of(C.fx_fill, "abc", 1, 1), 1, true)
    assert.matches("cannot convert 'int [2]' to 'const struct fx_point *'", err_of(C.fx_sum_points, ffi.new("int[2]"), 1), 1, true)
    assert.matches("missing declaration for symbol 'fx_undeclared'", err_of(function() return C.fx_undeclared end), 1, true)
    ffi.cdef "int fx_not_in_lib(void);"
    assert.matches("cannot resolve symbol 'fx_not_in_lib'", err_of(function() return C.fx_not_in_lib end), 1, true)
    assert.matches("ffi.load: cannot load 'no_such_library_xyz'", err_of(ffi.load, "no_such_library_xyz"), 1, true)
    assert.matches("call through a NULL function pointer", err_of(ffi.cast("int (*)(int)", 0), 1), 1, true)
    assert.matches("'int' is not callable", err_of(ffi.new("int", 1)), 1, true)
  end)
end)

describe("ffi calls of unusual types", function()
  it("refuses a struct parameter it cannot lay out, every time, without crashing", function()
    ffi.cdef "struct ffi_call_incomplete; int fx_add_inc(struct ffi_call_incomplete s);"
    local f = ffi.cast("int (*)(struct ffi_call_incomplete)", C.fx_add)
    for _ = 1, 2 do
      local ok, e = pcall(f, nil)
      assert.is_false(ok)
      assert.matches("cannot pass 'struct ffi_call_incomplete' by value", e, 1, true)
    end
  end)

  it("refuses by value a struct whose layout packed or aligned changed, but not one left as is", function()
    ffi.cdef [[
      struct __attribute__((packed)) ffi_call_packed { char c; int x; };
      struct ffi_call_over { int x; } __attribute__((aligned(16)));
      struct ffi_call_inner { char c; struct ffi_call_packed p; };
      struct ffi_call_same { int x __attribute__((aligned(4))); int y; double w __attribute__((aligned(8))); };
    ]]
    for _, t in ipairs { "struct ffi_call_packed", "struct ffi_call_over", "struct ffi_call_inner" } do
      local f = ffi.cast("int (*)(" .. t .. ")", C.fx_add)
      local ok, e = pcall(f, ffi.new(t))
      assert.is_false(ok)
      assert.matches("cannot pass '" .. t .. "' by value: packed or aligned layouts", e, 1, true)
      ok, e = pcall(ffi.cast, "void (*)(" .. t .. ")", function() end)
      assert.is_false(ok)
      assert.matches("by value: packed or aligned layouts", e, 1, true)
    end
    -- an aligned attribute that changes nothing is no obstacle
    local f = ffi.cast("double (*)(struct ffi_call_same)", C.fx_point_sum)
    assert.equal(3.5, f(ffi.new("struct ffi_call_same", 1, 2, 0.5)))
  end)

  it("calls long double functions from libm", function()
    ffi.cdef "long double fabsl(long double x);"
    local ok, m = pcall(ffi.load, "m")
    local lib = ok and m or ffi.C
    assert.equal(2.5, lib.fabsl(-2.5))
  end)
end)
