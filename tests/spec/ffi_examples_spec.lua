-- The examples in examples/ffi run and print what they promise (real Debian libraries:
-- libc's qsort, glibc's getaddrinfo_a, zlib).
local here = debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")
local root = here .. "../../"
local lua = arg and arg[-1] or "lua5.4"

local function run(example, args)
  local f = assert(io.popen(("%s %sexamples/ffi/%s %s 2>&1"):format(lua, root, example, args or "")))
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

local under_tsan = (os.getenv("LD_PRELOAD") or ""):find("tsan")
local test = under_tsan and pending or it

describe("ffi examples", function()
  test("qsort sorts with a Lua comparator", function()
    local out, ok = run("qsort.lua")
    assert.is_true(ok, out)
    assert.matches("apple banana cherry fig pear", out, 1, true)
    assert.matches("-1.0 0.25 2.0 3.5 7.0 10.0", out, 1, true)
  end)

  test("getaddrinfo_a is awaited through the bridge", function()
    local out, ok = run("getaddrinfo_a.lua", "localhost")
    assert.is_true(ok, out)
    assert.matches("localhost: [%x%.:]+", out)
    assert.matches("the loop stayed responsive: yes", out, 1, true)
  end)

  test("zlib compresses on the thread pool while the loop ticks", function()
    local out, ok = run("zlib_thread.lua", "8")
    assert.is_true(ok, out)
    assert.matches("compressed 8 MiB", out, 1, true)
    assert.matches("round trip ok; the loop ticked meanwhile: yes", out, 1, true)
  end)
end)
