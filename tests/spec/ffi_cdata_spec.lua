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
