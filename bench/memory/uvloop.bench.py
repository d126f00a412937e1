# uvloop: the asyncio code unchanged, on uvloop (RSS only).
# Prints: RESULT <n> <seconds> <rss delta bytes> - <rss total bytes>
import asyncio, gc, os, sys, time
import uvloop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

async def sleeper():
    await asyncio.sleep(3600)

async def main():
    tasks = []
    gc.collect()
    r0 = rss()
    t0 = time.perf_counter()
    for _ in range(N):
        tasks.append(asyncio.create_task(sleeper()))
    await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    gc.collect()
    r1 = rss()
    print("RESULT %d %.6f %d - %d" % (N, dt, r1 - r0, r1), flush=True)
    os._exit(0)

if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
