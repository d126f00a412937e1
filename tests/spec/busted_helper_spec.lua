-- lasync.busted, the helper that runs a spec body as a task: each case runs a small spec
-- file in a child busted process and checks how busted classified it.
local child = dofile((debug.getinfo(1, "S").source:sub(2):gsub("[^/]*$", "")) .. "child_helper.lua")

-- Runs a spec file whose body is `src` (with lasync and async in scope); returns busted's
-- summary counts and its whole output.
local function run_spec(src)
  local path = child.script("case_spec.lua", 'local lasync = require "lasync"\n' ..
    'local async = require "lasync.busted"\n' .. src)
  local env = ("env LUA_CPATH='%s' LUA_PATH='%s'"):format(package.cpath, package.path)
  local t0 = os.time()
  local _, out, err = child.sh(("%s lua5.4 /usr/bin/busted -o utfTerminal '%s'"):format(env, path))
  out = out .. err
  local s, f, e, p = out:match("(%d+) succ%a* / (%d+) fail%a* / (%d+) err%a* / (%d+) pend%a*")
  return {s = tonumber(s), f = tonumber(f), e = tonumber(e), p = tonumber(p), out = out,
          secs = os.time() - t0}
end

describe("lasync.busted", function()
  teardown(child.cleanup)

  it("passes a clean body that awaits", function()
    local r = run_spec('it("ok", async(function() lasync.sleep(0.01) end))')
    assert.same({1, 0, 0, 0}, {r.s, r.f, r.e, r.p}, r.out)
  end)

  it("keeps busted's failures and pendings what they are", function()
    local r = run_spec('it("fails", async(function() lasync.sleep(0); assert.is_true(false) end))\n' ..
      'it("later", async(function() pending("not yet") end))')
    assert.same({0, 1, 0, 1}, {r.s, r.f, r.e, r.p}, r.out)
  end)

  it("bounds a body that ignores its cancellation at the timeout", function()
    local r = run_spec('it("stuck", async({timeout = 0.2}, function()\n' ..
      '  while true do pcall(lasync.sleep, 0.05) end\nend))')
    assert.equals(1, r.e, r.out)
    assert.matches("spec timed out after 0.2 s", r.out, 1, true)
    assert.matches("ignored its cancellation", r.out, 1, true)
    assert.is_true(r.secs < 10, "took " .. r.secs .. " s")
  end)

  it("shows an unretrieved task error along with the body's own error", function()
    local r = run_spec('it("both", async(function()\n' ..
      '  lasync.spawn(function() error("child error", 0) end)\n' ..
      '  lasync.sleep(0.01)\n  error("body error", 0)\nend))')
    assert.equals(1, r.e, r.out)
    assert.matches("body error", r.out, 1, true)
    assert.matches("child error", r.out, 1, true)
  end)

  it("fails a body that leaves a ready callback rescheduling itself", function()
    local r = run_spec('it("ticking", async(function() async.iteration_counter() end))')
    assert.equals(1, r.e, r.out)
    assert.matches("1 ready callback(s) behind", r.out, 1, true)
  end)
end)
