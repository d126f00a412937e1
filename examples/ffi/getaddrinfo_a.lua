-- glibc's asynchronous resolver, awaited through the bridge: getaddrinfo_a() completes on
-- a thread glibc starts (SIGEV_THREAD), and the notification is delivered to the loop
-- thread, where the waiting task resumes. Other tasks keep running meanwhile.
--   lua5.4 examples/ffi/getaddrinfo_a.lua [host...]
local lasync = require "lasync"
local ffi = require "lasync.ffi"

ffi.cdef [[
typedef unsigned int socklen_t;
struct sockaddr { unsigned short sa_family; char sa_data[14]; };
struct in_addr { uint32_t s_addr; };
struct sockaddr_in { unsigned short sin_family; uint16_t sin_port; struct in_addr sin_addr; char zero[8]; };
struct in6_addr { uint8_t s6_addr[16]; };
struct sockaddr_in6 { unsigned short sin6_family; uint16_t sin6_port; uint32_t sin6_flowinfo;
                      struct in6_addr sin6_addr; uint32_t sin6_scope_id; };
struct addrinfo {
  int ai_flags; int ai_family; int ai_socktype; int ai_protocol;
  socklen_t ai_addrlen; struct sockaddr *ai_addr; char *ai_canonname; struct addrinfo *ai_next;
};
struct gaicb {
  const char *ar_name; const char *ar_service; const struct addrinfo *ar_request;
  struct addrinfo *ar_result; int __return; int __glibc_reserved[5];
};
union sigval { int sival_int; void *sival_ptr; };
struct sigevent {
  union sigval sigev_value; int sigev_signo; int sigev_notify;
  union {
    int _pad[12];
    int _tid;
    struct { void (*_function)(union sigval); void *_attribute; } _sigev_thread;
  } _sigev_un;
};
enum { GAI_WAIT = 0, GAI_NOWAIT = 1, SIGEV_THREAD = 2, AF_INET = 2, AF_INET6 = 10, SOCK_STREAM = 1 };
int getaddrinfo_a(int mode, struct gaicb *list[], int nitems, struct sigevent *sevp);
int gai_error(struct gaicb *req);
const char *gai_strerror(int errcode);
void freeaddrinfo(struct addrinfo *res);
const char *inet_ntop(int af, const void *src, char *dst, socklen_t size);
]]

-- glibc >= 2.34 has getaddrinfo_a in libc itself; older ones in libanl
local lib = pcall(function() return ffi.C.getaddrinfo_a end) and ffi.C or ffi.load("anl")

local function resolve(host)
  local hints = ffi.new("struct addrinfo", { ai_socktype = ffi.C.SOCK_STREAM })
  local req = ffi.new("struct gaicb", { ar_name = host, ar_request = hints })
  local list = ffi.new("struct gaicb *[1]", { req })
  local sev = ffi.new("struct sigevent")
  local notify, done, never = ffi.oneshot("void (*)(union sigval)")
  sev.sigev_notify = ffi.C.SIGEV_THREAD
  sev._sigev_un._sigev_thread._function = notify
  local rc = lib.getaddrinfo_a(ffi.C.GAI_NOWAIT, list, 1, sev)
  if rc ~= 0 then
    never()  -- glibc will not call back: release the closure now
    return nil, ffi.string(lib.gai_strerror(rc))
  end
  done:await()  -- resumed on the loop thread once glibc's thread has called `notify`
  local err = lib.gai_error(req)
  if err ~= 0 then return nil, ffi.string(lib.gai_strerror(err)) end
  local addrs, buf = {}, ffi.new("char[64]")
  local ai = req.ar_result
  while ai do
    local fam = ai.ai_family
    local src = fam == ffi.C.AF_INET and ffi.cast("struct sockaddr_in *", ai.ai_addr).sin_addr
             or ffi.cast("struct sockaddr_in6 *", ai.ai_addr).sin6_addr
    addrs[#addrs + 1] = ffi.string(lib.inet_ntop(fam, src, buf, 64))
    ai = ai.ai_next
  end
  lib.freeaddrinfo(req.ar_result)
  return addrs
end

lasync.run(function(...)
  local hosts = { ... }
  if #hosts == 0 then hosts = { "localhost" } end
  local ticks = 0
  local ticker = lasync.spawn(function() while true do ticks = ticks + 1; lasync.sleep(0.001) end end)
  for _, host in ipairs(hosts) do
    local addrs, err = resolve(host)
    if addrs then
      table.sort(addrs)
      print(host .. ": " .. table.concat(addrs, " "))
    else
      print(host .. ": error: " .. err)
    end
  end
  ticker:cancel()
  print("the loop stayed responsive: " .. (ticks > 0 and "yes" or "no"))
end, ...)
