-- C data from Lua: allocation, casts, sizes, typeof/istype, strings, copy/fill, field and
-- index access, pointer arithmetic and comparison, finalizers, errno, 64-bit integers.
local h = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "ffi_helper.lua")
local ffi, C = h.ffi, h.C

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

describe("ffi cdata", function()
  it("allocates zeroed objects and initialises them from values and tables", function()
    local a = ffi.new("int[4]")
    for i = 0, 3 do assert.equal(0, a[i]) end
    local b = ffi.new("int[4]", { 1, 2, 3, 4 })
    assert.equal(4, b[3])
    local c = ffi.new("int[3]", 7)  -- one value fills every element
    assert.equal(7, c[2])
    local v = ffi.new("double[?]", 3, 1.5, 2.5)
    assert.equal(3, #v)
    assert.equal(2.5, v[1])
    assert.equal(0, v[2])
    local p = ffi.new("struct fx_point", { x = 1, y = 2, w = 0.5 })
    assert.same({ 1, 2, 0.5 }, { p.x, p.y, p.w })
    local q = ffi.new("struct fx_point", 3, 4)  -- positional
    assert.same({ 3, 4 }, { q.x, q.y })
    local s = ffi.new("char[8]", "hi")
    assert.equal("hi", ffi.string(s))
    local ct = ffi.typeof("struct fx_point")
    assert.equal(5, ct({ x = 5 }).x)
    assert.matches("ffi.new: string of length 9 too long", err_of(ffi.new, "char[4]", "too long!"), 1, true)
    assert.matches("ffi.new: array size of 'int []' unknown", err_of(ffi.new, "int[]"), 1, true)
    assert.matches("ffi.new: bad array size", err_of(ffi.new, "int[?]", -1), 1, true)
    assert.matches("ffi.new: 'void' has no size", err_of(ffi.new, "void"), 1, true)
    assert.matches("unknown type name 'nosuch_t'", err_of(ffi.new, "nosuch_t"), 1, true)
  end)

  it("reads table initializers as LuaJIT: one element fills a fixed array, [0] starts at 0", function()
    local a = ffi.new("int[3]", { 4 })
    assert.same({ 4, 4, 4 }, { a[0], a[1], a[2] })
    local m = ffi.new("int[2][2]", { { 1, 2 } })  -- a lone row too
    assert.same({ 1, 2, 1, 2 }, { m[0][0], m[0][1], m[1][0], m[1][1] })
    local v = ffi.new("int[?]", 3, { 5 })  -- not a variable-length one: it is zero-filled
    assert.same({ 5, 0, 0 }, { v[0], v[1], v[2] })
    local two = ffi.new("int[3]", { 1, 2 })
    assert.same({ 1, 2, 0 }, { two[0], two[1], two[2] })
    local p = ffi.new("struct fx_point", { [0] = 9, 8 })
    assert.same({ 9, 8 }, { p.x, p.y })
  end)

  it("refuses more initializers than the object has elements or fields", function()
    assert.matches("ffi.new: too many initializers for 'int [2]'", err_of(ffi.new, "int[2]", 1, 2, 3), 1, true)
    assert.matches("ffi.new: too many initializers for 'int [2]'", err_of(ffi.new, "int[2]", { 1, 2, 3 }), 1, true)
    assert.matches("ffi.new: too many initializers for 'int [2]'", err_of(ffi.new, "int[2]", { [0] = 1, 2, 3 }), 1, true)
    assert.matches("ffi.new: too many initializers for 'int [?]'", err_of(ffi.new, "int[?]", 2, { 1, 2, 3 }), 1, true)
    assert.matches("ffi.new: too many initializers for 'struct fx_point'", err_of(ffi.new, "struct fx_point", 1, 2, 3, 4), 1, true)
    assert.matches("ffi.new: too many initializers for 'int [2]'",
                   err_of(ffi.new, "struct { int a[2]; }", { a = { 1, 2, 3 } }), 1, true)
    local r = ffi.new("struct fx_rect")
    assert.matches("cdata assignment: too many initializers for 'struct fx_point'",
                   err_of(function() r.a = { 1, 2, 3, 4 } end), 1, true)
    -- exactly full is fine, and so is fewer
    local a = ffi.new("int[2]", { 1, 2 })
    assert.same({ 1, 2 }, { a[0], a[1] })
    local b = ffi.new("int[3]", 4, 5)
    assert.same({ 4, 5, 0 }, { b[0], b[1], b[2] })
    assert.same({ 1, 2 }, { ffi.new("int[2]", { [0] = 1, 2 })[0], ffi.new("int[2]", { [0] = 1, 2 })[1] })
  end)

  it("keeps [?] arrays as one type whatever their size, with their own count", function()
    local seen = {}
    for n = 1, 50 do
      local a = ffi.new("uint8_t[?]", n, 7)
      assert.equal(n, #a)
      assert.equal(n, ffi.sizeof(a))
      assert.equal(7, a[n - 1])
      assert.has_error(function() return a[n] end)
      seen[tostring(ffi.typeof(a))] = true
    end
    assert.same({ ["ctype<uint8_t [?]>"] = true }, seen)
    local fixed = ffi.new("uint8_t[4]")
    ffi.copy(fixed, ffi.new("uint8_t[?]", 2, 9), 2)
    assert.equal(9, fixed[1])
  end)

  it("reads and writes fields, nested fields, array elements and through pointers", function()
    local r = ffi.new("struct fx_rect")
    r.a.x = 10
    r.b = { x = 3, y = 4, w = 1.25 }
    assert.equal(10, r.a.x)
    assert.equal(1.25, r.b.w)
    local ref = r.a  -- a reference that keeps r alive
    r = nil
    collectgarbage()
    ref.y = 9
    assert.equal(9, ref.y)
    local arr = ffi.new("struct fx_point[2]")
    local p = ffi.cast("struct fx_point *", arr)
    p[1].x = 42
    assert.equal(42, arr[1].x)
    assert.equal(42, (p + 1).x)
    assert.matches("has no member named 'z'", err_of(function() return arr[0].z end), 1, true)
    assert.matches("index 2 out of range", err_of(function() return arr[2] end), 1, true)
    assert.matches("'const int' is const", err_of(function() local c = ffi.new("const int[1]"); c[0] = 1 end), 1, true)
    assert.matches("cannot convert 'string' to 'int'", err_of(function() arr[0].x = "x" end), 1, true)
    assert.matches("NULL pointer dereference", err_of(function() return ffi.cast("int *", 0)[0] end), 1, true)
  end)

  it("bounds-checks flexible array members of objects whose size is known", function()
    ffi.cdef "struct cd_fam { int n; int data[]; }; struct cd_fam_pad { double d; char c; char tail[]; };"
    local s = ffi.new("struct cd_fam")  -- no count: the flexible array has no elements
    assert.equal(0, #s.data)
    assert.matches("cdata assignment: index 0 out of range for 'int []'", err_of(function() s.data[0] = 1 end), 1, true)
    assert.matches("cdata index: index 63 out of range", err_of(function() return s.data[63] end), 1, true)
    -- a count allocates the elements, as a variable-length struct
    local v = ffi.new("struct cd_fam", 5, { n = 5, data = { 1, 2, 3 } })
    assert.equal(24, ffi.sizeof(v))
    assert.equal(24, ffi.sizeof("struct cd_fam", 5))
    assert.equal(5, v.n)
    assert.equal(5, #v.data)
    assert.same({ 1, 2, 3, 0, 0 }, { v.data[0], v.data[1], v.data[2], v.data[3], v.data[4] })
    v.data[4] = 9
    assert.equal(9, v.data[4])
    assert.matches("index 5 out of range", err_of(function() v.data[5] = 1 end), 1, true)
    assert.matches("ffi.new: bad array size -1", err_of(ffi.new, "struct cd_fam", -1), 1, true)
    assert.matches("too many initializers", err_of(ffi.new, "struct cd_fam", 2, { data = { 1, 2, 3 } }), 1, true)
    -- tail padding belongs to the object: it is reachable, and no more
    assert.equal(7, #ffi.new("struct cd_fam_pad").tail)
    -- through a pointer the size is unknown, as in C: no check, and no length
    local p = ffi.cast("struct cd_fam *", v)
    assert.equal(9, p.data[4])
    assert.matches("unknown", err_of(function() return #p.data end), 1, true)
  end)

  it("names the real index when it is out of range", function()
    local a = ffi.new("int[4]")
    assert.matches("cdata index: index 1099511627776 out of range for 'int [4]'", err_of(function() return a[2^40] end), 1, true)
    assert.matches("cdata assignment: index -9223372036854775808 out of range",
                   err_of(function() a[math.mininteger] = 1 end), 1, true)
    assert.matches("cdata index: index 4294967296 out of range for 'int [?]'",
                   err_of(function() return ffi.new("int[?]", 2)[1 << 32] end), 1, true)
  end)

  it("reads and writes the unaligned members of packed structs", function()
    ffi.cdef [[
      #pragma pack(push, 1)
      struct cd_packed { char c; int16_t s; int32_t i; int64_t l; float f; double d; void *p; uint32_t a[2]; };
      #pragma pack(pop)
    ]]
    assert.equal(43, ffi.sizeof("struct cd_packed"))
    local v = ffi.new("struct cd_packed", { 1, -2, -3, math.mininteger, 1.5, -2.25, ffi.NULL, { 7, 0xffffffff } })
    v.p = ffi.cast("void *", 0x123456789)
    assert.same({ 1, -2, -3, math.mininteger, 1.5, -2.25, 7, 0xffffffff },
                { v.c, v.s, v.i, v.l, v.f, v.d, v.a[0], v.a[1] })
    assert.equal(0x123456789, ffi.tonumber(v.p))
    local bytes = ffi.cast("uint8_t *", v)
    assert.equal(0xfe, bytes[1])  -- the int16_t at offset 1
    assert.equal(0xfd, bytes[3])  -- the int32_t at offset 3
  end)

  it("does pointer arithmetic and comparison", function()
    local a = ffi.new("int[10]")
    local p = ffi.cast("int *", a)
    local q = p + 3
    assert.equal(3, q - p)
    assert.is_true(p < q)
    assert.is_true(q <= q)
    assert.is_true(p == ffi.cast("int *", a))
    assert.is_false(p == q)
    assert.equal(1, (q - 2) - p)
    assert.equal(5, (2 + p + 3) - p)
    assert.is_true(ffi.isnull(ffi.NULL))
    assert.is_true(ffi.isnull(nil))
    assert.is_false(ffi.isnull(p))
    assert.matches("pointer subtraction of different types", err_of(function() return p - ffi.cast("char *", a) end), 1, true)
    -- the offset may be an integer cdata or a float with an integer value, as in LuaJIT
    assert.equal(4, (p + ffi.new("int64_t", 4)) - p)
    assert.equal(2, (ffi.cast("size_t", 2) + p) - p)
    assert.equal(1, (p + 1.0) - p)
    assert.matches("attempt to perform arithmetic on 'int *' and a non-integer number",
                   err_of(function() return p + 1.5 end), 1, true)
    assert.matches("attempt to perform arithmetic on 'int *' and boolean", err_of(function() return p + true end), 1, true)
    assert.matches("attempt to perform arithmetic on 'int *' and 'int *'", err_of(function() return p + p end), 1, true)
  end)

  it("casts, sizes and type tests", function()
    assert.equal(0x1234, ffi.tonumber(ffi.cast("uintptr_t", ffi.cast("void *", 0x1234))))
    assert.equal(-1, ffi.tonumber(ffi.cast("int8_t", 255)))
    assert.equal(255, ffi.tonumber(ffi.cast("uint8_t", -1)))
    assert.equal(40, ffi.sizeof("struct fx_rect"))
    assert.equal(12, ffi.sizeof("int[?]", 3))
    assert.equal(12, ffi.sizeof(ffi.new("int[?]", 3)))
    assert.equal(32, ffi.offsetof("struct fx_rect", "tag"))
    local pt = ffi.new("struct fx_point")
    assert.is_true(ffi.istype("struct fx_point", pt))
    assert.is_false(ffi.istype("struct fx_rect", pt))
    assert.is_true(ffi.typeof(pt) == ffi.typeof("struct fx_point"))
    assert.equal("ctype<struct fx_point *>", tostring(ffi.typeof("$ *", ffi.typeof(pt))))
    assert.matches("ffi.cast: cannot cast to 'struct fx_point'", err_of(ffi.cast, "struct fx_point", 1), 1, true)
    assert.matches("ffi.sizeof: C type expected", err_of(ffi.sizeof, {}), 1, true)
  end)

  it("ffi.tonumber converts numbers and numeric cdata, and gives nil for anything else", function()
    assert.equal(7, ffi.tonumber(ffi.new("int", 7)))
    assert.equal(2.5, ffi.tonumber(ffi.new("double", 2.5)))
    assert.equal(3, ffi.tonumber(3))
    assert.equal(1.5, ffi.tonumber(1.5))
    assert.equal(12, ffi.tonumber("12"))  -- as tonumber does
    assert.is_nil(ffi.tonumber())
    assert.is_nil(ffi.tonumber(nil))
    assert.is_nil(ffi.tonumber("abc"))
    assert.is_nil(ffi.tonumber(true))
    assert.is_nil(ffi.tonumber({}))
    assert.is_nil(ffi.tonumber(ffi.new("struct fx_point")))
  end)

  it("converts strings, copies and fills memory", function()
    local buf = ffi.new("char[16]")
    ffi.copy(buf, "hello")
    assert.equal("hello", ffi.string(buf))
    assert.equal("hel", ffi.string(buf, 3))
    ffi.fill(buf, 4, 65)
    assert.equal("AAAAo", ffi.string(buf))
    local other = ffi.new("char[16]")
    ffi.copy(other, buf, 6)
    assert.equal("AAAAo", ffi.string(other))
    assert.matches("ffi.string: NULL pointer", err_of(ffi.string, ffi.NULL), 1, true)
    assert.matches("ffi.copy: length 100 beyond the string", err_of(ffi.copy, buf, "abc", 100), 1, true)
    assert.matches("ffi.fill: negative length", err_of(ffi.fill, buf, -1), 1, true)
  end)

  it("copies, fills and reads zero bytes without touching memory, even at NULL", function()
    ffi.copy(ffi.NULL, "", 0)
    ffi.copy(ffi.NULL, ffi.NULL, 0)
    ffi.fill(ffi.NULL, 0)
    assert.equal("", ffi.string(ffi.NULL, 0))
    assert.matches("ffi.copy: NULL pointer", err_of(ffi.copy, ffi.NULL, "a", 1), 1, true)
    assert.matches("ffi.fill: NULL pointer", err_of(ffi.fill, ffi.NULL, 1), 1, true)
    assert.matches("ffi.copy: negative length", err_of(ffi.copy, ffi.new("char[4]"), "abc", -1), 1, true)
    -- the size of a cdata array or struct bounds copies, fills and reads
    local small = ffi.new("char[4]")
    assert.matches("ffi.copy: length 6 beyond the 4 bytes of the destination", err_of(ffi.copy, small, "hello"), 1, true)
    assert.matches("ffi.copy: length 8 beyond the 4 bytes of the source", err_of(ffi.copy, ffi.new("char[8]"), small, 8), 1, true)
    assert.matches("ffi.fill: length 5 beyond the 4 bytes of the destination", err_of(ffi.fill, small, 5), 1, true)
    assert.matches("ffi.string: length 5 beyond the 4 bytes of the object", err_of(ffi.string, small, 5), 1, true)
    ffi.copy(small, "abc")
    ffi.fill(small, 4, 66)
    assert.equal("BBBB", ffi.string(small, 4))
  end)

  it("keeps 64-bit integers exact", function()
    assert.equal(math.maxinteger, C.fx_add64(math.maxinteger - 1, 1))
    assert.equal(math.mininteger, C.fx_add64(math.mininteger + 1, -1))
    assert.equal(-1, C.fx_umax())  -- all 64 bits set, as a Lua integer
    assert.equal("18446744073709551615ULL", tostring(ffi.new("uint64_t", -1)):match("%d+ULL"))
    local x = ffi.new("int64_t[1]", 0x123456789abcdef0)
    assert.equal(0x123456789abcdef0, x[0])
    assert.equal(9007199254740993, ffi.tonumber(ffi.new("int64_t", 9007199254740993)))
    assert.equal(9007199254740993, C.fx_add64(9007199254740992, 1))
    assert.matches("out of range", err_of(ffi.new, "int64_t", 1e300), 1, true)
  end)

  it("compares and divides uint64_t cdata as unsigned", function()
    local big, one = ffi.new("uint64_t", -1), ffi.new("uint64_t", 1)
    assert.is_true(big > one)
    assert.is_true(one < big)
    assert.is_false(big <= one)
    assert.is_true(big > 1)
    assert.is_true(0 < big)
    assert.equal(9223372036854775807, big // 2)
    assert.equal(5, big % 10)
    assert.equal(18446744073709551615 / 2, big / 2)
    assert.equal(2 ^ 64 - 1, ffi.new("uint64_t", -1) + 0.0)
    -- subtraction and multiplication are arithmetic, not comparisons (their operator codes
    -- are those of < and <=), keeping the bits as addition does
    local five = ffi.new("uint64_t", 5)
    assert.equal(-5, five - 10)
    assert.equal(2, five - 3)
    assert.equal(10, five * 2)
    assert.equal(5, 10 - five)
    assert.equal(-2, big * 2)
    -- signed 64-bit values stay signed
    assert.is_true(ffi.new("int64_t", -1) < ffi.new("int64_t", 1))
    assert.equal(-2, ffi.new("int64_t", -3) // 2)  -- Lua numbers: floor division
    assert.equal(3, ffi.new("int", 7) // 2)
  end)

  it("reads enum values back as the constants they were set from", function()
    ffi.cdef [[
      enum cd_big { CD_BIG = 0x80000000, CD_BIGGER = 0xFFFFFFFF };
      enum cd_mixed { CD_NEG = -2, CD_POS = 0xFFFFFFFF };
      enum cd_small { CD_A = -1, CD_B = 7 };
      struct cd_with_enum { enum cd_big e; int after; };
    ]]
    assert.equal(4, ffi.sizeof("enum cd_big"))
    assert.equal(ffi.C.CD_BIG, ffi.tonumber(ffi.new("enum cd_big", "CD_BIG")))
    assert.equal(4294967295, ffi.tonumber(ffi.new("enum cd_big", "CD_BIGGER")))
    local s = ffi.new("struct cd_with_enum", { e = "CD_BIGGER", after = 3 })
    assert.equal(ffi.C.CD_BIGGER, s.e)
    assert.equal(3, s.after)
    assert.equal(8, ffi.sizeof("enum cd_mixed"))  -- needs more than 32 bits, as GCC lays it out
    assert.equal(-2, ffi.tonumber(ffi.new("enum cd_mixed", "CD_NEG")))
    assert.equal(ffi.C.CD_POS, ffi.tonumber(ffi.new("enum cd_mixed", "CD_POS")))
    assert.equal(4, ffi.sizeof("enum cd_small"))
    assert.equal(-1, ffi.tonumber(ffi.new("enum cd_small", "CD_A")))
  end)

  it("initialises the fields of anonymous struct and union members from tables", function()
    ffi.cdef "struct cd_anon { int x; union { int i; float f; }; struct { int y, z; }; };"
    local a = ffi.new("struct cd_anon", { x = 1, i = 2, y = 3, z = 4 })
    assert.same({ 1, 2, 3, 4 }, { a.x, a.i, a.y, a.z })
    local b = ffi.new("struct cd_anon", { x = 1, f = 0.5, z = 9 })
    assert.same({ 0.5, 0, 9 }, { b.f, b.y, b.z })
    local c = ffi.new("struct cd_anon", 5, 6, 7, 8)  -- positional, through the members in order
    assert.same({ 5, 6, 7, 8 }, { c.x, c.i, c.y, c.z })
    assert.matches("too many initializers", err_of(ffi.new, "struct cd_anon", 1, 2, 3, 4, 5), 1, true)
  end)

  it("runs gc finalizers once, and not after they are removed", function()
    local n = 0
    local function fin() n = n + 1 end
    do local a = ffi.gc(ffi.new("int[1]"), fin) end
    local b = ffi.gc(ffi.new("int[1]"), fin)
    ffi.gc(b, nil)
    b = nil
    collectgarbage(); collectgarbage()
    assert.equal(1, n)
  end)

  it("takes C functions as gc finalizers (ffi.gc(p, ffi.C.free))", function()
    ffi.cdef "void *malloc(size_t n); void free(void *p);"
    local freed = {}
    local fin = ffi.cast("void (*)(void *)", function(q) freed[#freed + 1] = ffi.tonumber(ffi.cast("uintptr_t", q)) end)
    local addr
    do
      local p = ffi.gc(ffi.C.malloc(16), fin)
      addr = ffi.tonumber(ffi.cast("uintptr_t", p))
      ffi.gc(ffi.C.malloc(16), ffi.C.free)  -- the LuaJIT idiom; freed by C
    end
    collectgarbage(); collectgarbage()
    assert.same({ addr }, freed)
    fin:free()
    ffi.C.free(ffi.cast("void *", addr))
    assert.matches("ffi.gc: function or C function expected, got number", err_of(ffi.gc, ffi.new("int[1]"), 5), 1, true)
    assert.matches("ffi.gc: function or C function expected, got 'int'", err_of(ffi.gc, ffi.new("int[1]"), ffi.new("int")), 1, true)
  end)

  it("reads errno after a call", function()
    assert.equal(-1, C.fx_set_errno(34))
    assert.equal(34, ffi.errno())
    assert.equal(34, ffi.errno(0))
    assert.equal(0, ffi.errno())
  end)

  it("does arithmetic on scalar cdata", function()
    local v = ffi.new("int", 40)
    assert.equal(42, v + 2)
    assert.equal(80, 2 * v)
    assert.is_true(v < 41)
  end)
end)
