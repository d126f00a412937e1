# uvloop: the asyncio code unchanged, on uvloop's event loop.
import asyncio, sys, time
import uvloop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000

async def child():
    await asyncio.sleep(0)

async def main():
    t0 = time.perf_counter()
    for _ in range(N):
        await asyncio.create_task(child())
    dt = time.perf_counter() - t0
    print("RESULT %d %.6f" % (N, dt))

if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
