-- Helpers for specs that run a script in a child process (stock lua5.4 or the lasync
-- runner), so that a crash or a hang fails one spec instead of taking busted down with it.
-- Loaded with dofile by run_spec and review_spec (not a spec itself).
local M = {}

M.RUNNER = (os.getenv("LASYNC_BUILD") or "build") .. "/bin/lasync"
M.limit = 20 -- seconds a child may run; exit code 124 means it hung

local tmpdir

-- Writes src to a fresh temporary directory as `name`; returns the path.
function M.script(name, src)
  if not tmpdir then
    tmpdir = os.tmpname()
    os.remove(tmpdir)
    assert(os.execute("mkdir -p '" .. tmpdir .. "'"))
  end
  local path = tmpdir .. "/" .. name
  local fh = assert(io.open(path, "w"))
  fh:write(src)
  fh:close()
  return path
end

local function slurp(p)
  local fh = io.open(p)
  local s = fh and fh:read("a") or ""
  if fh then fh:close() end
  os.remove(p)
  return s
end

-- Runs a shell command line under `timeout M.limit`; returns the exit code (128 + N when
-- signal N killed it: 139 is SIGSEGV), stdout and stderr.
function M.sh(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local _, how, code = os.execute(("timeout %d %s >'%s' 2>'%s'"):format(M.limit, cmd, out, err))
  if how == "signal" then code = 128 + code end
  return code, slurp(out), slurp(err)
end

local function env()
  return ("env LUA_CPATH='%s' LUA_PATH='%s'"):format(package.cpath, package.path)
end

-- Runs the script at path with the runner; args is appended to the command line as is.
function M.runner(path, args)
  return M.sh(("%s '%s' '%s' %s"):format(env(), M.RUNNER, path, args or ""))
end

-- Writes src as `name` and runs it with stock lua5.4, or with the runner.
function M.lua_child(name, src)
  return M.sh(("%s lua5.4 '%s'"):format(env(), M.script(name, src)))
end

function M.run_script(name, src, args)
  return M.runner(M.script(name, src), args)
end

function M.cleanup()
  if tmpdir then os.execute("rm -rf '" .. tmpdir .. "'") end
  tmpdir = nil
end

return M
