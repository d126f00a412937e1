-- Lua functions as C function pointers on the loop thread: synchronous callbacks, explicit
-- lifetime (free, set), misuse after free, errors, and closure allocation failure.
local h = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "ffi_helper.lua")
local ffi, C = h.ffi, h.C

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

describe("ffi callbacks", function()
  it("sorts with qsort and a Lua comparator", function()
    ffi.cdef "void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));"
    local n = 100
    local a = ffi.new("int[?]", n)
    for i = 0, n - 1 do a[i] = (i * 37) % n end
    local calls = 0
    local cmp = ffi.cast("int (*)(const void *, const void *)", function(x, y)
      calls = calls + 1
      local u, v = ffi.cast("const int *", x)[0], ffi.cast("const int *", y)[0]
      return u < v and -1 or u > v and 1 or 0
    end)
    ffi.C.qsort(a, n, ffi.sizeof("int"), cmp)
    cmp:free()
    for i = 0, n - 1 do assert.equal(i, a[i]) end
    assert.is_true(calls > n)
  end)

  it("passes arguments and results of every kind", function()
    local cb = ffi.cast("int (*)(int, int)", function(a, b) return a * b end)
    assert.equal(42, C.fx_apply(cb, 6, 7))
    assert.equal(42, cb(6, 7))  -- callable from Lua too
    cb:free()
    local pt = ffi.cast("double (*)(struct fx_point)", function(p) return p.x + p.y + p.w end)
    assert.equal(5 + 6 + 0.25, C.fx_apply_point(pt, 5))
    pt:free()
    -- a Lua function passed directly lives for the duration of the call
    assert.equal(3, C.fx_apply(function(a, b) return a - b end, 5, 2))
    local seen = {}
    C.fx_call_n(function(i) seen[#seen + 1] = i end, 3)
    assert.same({ 0, 1, 2 }, seen)
  end)

  it("gives callbacks struct arguments as their own copies, valid after the call", function()
    local saved
    assert.equal(5 + 6 + 0.25, C.fx_apply_point(function(p) saved = p; return p.x + p.y + p.w end, 5))
    -- reuse the C stack the argument was on
    C.fx_apply_point(function(p) return #tostring(p) + #string.format("%s %d", {}, p.x) end, 100)
    assert.same({ 5, 6, 0.25 }, { saved.x, saved.y, saved.w })
    assert.is_true(ffi.istype("struct fx_point", saved))
    saved.x = 1  -- and it is writable Lua-owned memory
    assert.equal(1, saved.x)
  end)

  it("has an explicit lifetime: set replaces the function, free releases it", function()
    local got = {}
    local cb = ffi.cast("void (*)(int)", function(v) got[#got + 1] = "a" .. v end)
    C.fx_store(cb)
    C.fx_fire(1)
    cb:set(function(v) got[#got + 1] = "b" .. v end)
    C.fx_fire(2)
    assert.same({ "a1", "b2" }, got)
    cb:free()
    assert.matches("callback:free: callback already freed", err_of(cb.free, cb), 1, true)
    assert.matches("callback:set: callback already freed", err_of(cb.set, cb, print), 1, true)
    -- C still holds the pointer: calling it is an error, never a crash
    assert.matches("called after it was freed", err_of(C.fx_fire, 3), 1, true)
    C.fx_store(nil)
    assert.matches("callback expected", err_of(ffi.cast("void (*)(int)", 0).free, ffi.cast("void (*)(int)", 0)), 1, true)
  end)

  it("raises a callback's error from the C call that ran it", function()
    local e = err_of(C.fx_apply, function() error("boom in callback") end, 1, 2)
    assert.matches("boom in callback", e, 1, true)
    -- a bad result is an error too
    e = err_of(C.fx_apply, function() return "not a number" end, 1, 2)
    assert.matches("callback result: cannot convert 'string' to 'int'", e, 1, true)
    -- and the bridge is usable afterwards
    assert.equal(3, C.fx_apply(function(a, b) return a + b end, 1, 2))
  end)

  it("turns closure allocation failure into a Lua error", function()
    ffi.debug_fail_closures(1)
    local e = err_of(ffi.cast, "void (*)(int)", function() end)
    assert.matches("ffi.cast: cannot allocate a callback closure", e, 1, true)
    local ok = pcall(C.fx_call_n, function() end, 1)
    assert.is_true(ok)  -- the next allocation works again
  end)

  it("leaves no memory writable and executable", function()
    local cbs = {}
    for i = 1, 50 do cbs[i] = ffi.cast("int (*)(int, int)", function(a, b) return a + b + i end) end
    assert.equal(53, C.fx_apply(cbs[50], 1, 2))
    local f = assert(io.open("/proc/self/maps"))
    local maps = f:read("a")
    f:close()
    for line in maps:gmatch("[^\n]+") do
      local perms = line:match("^%S+%s+(%S+)")
      assert.is_falsy(perms:find("w", 1, true) and perms:find("x", 1, true), "rwx mapping: " .. line)
    end
    for i = 1, 50 do cbs[i]:free() end
  end)

  it("rejects what cannot be a callback", function()
    assert.matches("cannot convert 'function' to 'int *'", err_of(ffi.cast, "int *", function() end), 1, true)
    assert.matches("variadic callbacks are not supported", err_of(ffi.cast, "int (*)(int, ...)", function() end), 1, true)
  end)
end)
