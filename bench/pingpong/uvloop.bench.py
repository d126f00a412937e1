# uvloop: the asyncio code unchanged, on uvloop: loop.create_future(), set_result(), await.
import asyncio, sys, time
import uvloop

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000

async def peer(ping):
    loop = asyncio.get_running_loop()
    for _ in range(N):
        pong = await ping
        ping = loop.create_future()
        pong.set_result(ping)

async def main():
    loop = asyncio.get_running_loop()
    ping = loop.create_future()
    task = asyncio.create_task(peer(ping))
    t0 = time.perf_counter()
    for _ in range(N):
        pong = loop.create_future()
        ping.set_result(pong)
        ping = await pong
    dt = time.perf_counter() - t0
    await task
    print("RESULT %d %.6f" % (N, dt))

if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
