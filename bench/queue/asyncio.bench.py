# asyncio: asyncio.Queue.  pingpong: two tasks, two unbounded queues, one put+get each way
# per round.  pipeline: producer -> Queue(64) -> worker (x*2) -> Queue(64) -> consumer.
# Usage: python3 asyncio.bench.py N pingpong|pipeline   -> RESULT <ops> <seconds>
# (uvloop.bench.py runs this same code after uvloop.install()).
import asyncio, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
MODE = sys.argv[2] if len(sys.argv) > 2 else "pingpong"

async def pingpong():
    q1, q2 = asyncio.Queue(), asyncio.Queue()
    async def peer():
        for _ in range(N):
            await q2.put(await q1.get())
    task = asyncio.create_task(peer())
    t0 = time.perf_counter()
    for i in range(N):
        await q1.put(i)
        assert await q2.get() == i
    dt = time.perf_counter() - t0
    await task
    return dt

async def pipeline():
    q1, q2 = asyncio.Queue(64), asyncio.Queue(64)
    t0 = time.perf_counter()
    async def producer():
        for i in range(1, N + 1):
            await q1.put(i)
    async def worker():
        for _ in range(N):
            await q2.put(await q1.get() * 2)
    tasks = [asyncio.create_task(producer()), asyncio.create_task(worker())]
    s = 0
    for _ in range(N):
        s += await q2.get()
    dt = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    assert s == N * (N + 1)
    return dt

async def main():
    dt = await (pingpong() if MODE == "pingpong" else pipeline())
    print("RESULT %d %.6f" % (N, dt))

if __name__ == "__main__":
    asyncio.run(main())
