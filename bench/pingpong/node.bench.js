// Node.js: a "future" is a Promise plus its resolve function; the peer is an async
// function started without await (its promise is the task).
const N = process.argv[2] ? parseInt(process.argv[2], 10) : 200000;

function future() {
  let resolve;
  const p = new Promise((r) => { resolve = r; });
  return { p, resolve };
}

async function peer(ping) {
  for (let i = 0; i < N; i++) {
    const pong = await ping.p;
    ping = future();
    pong.resolve(ping);
  }
}

async function main() {
  let ping = future();
  const task = peer(ping);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const pong = future();
    ping.resolve(pong);
    ping = await pong.p;
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await task;
  console.log(`RESULT ${N} ${dt.toFixed(6)}`);
}

main();
