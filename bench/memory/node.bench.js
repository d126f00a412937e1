// Node.js: N async functions each in `await new Promise(r => setTimeout(r, 3600e3))`
// (RSS only).  Run with --expose-gc (bench/run.sh does).
// Prints: RESULT <n> <seconds> <rss delta bytes> - <rss total bytes>
const N = process.argv[2] ? parseInt(process.argv[2], 10) : 100000;
const gc = global.gc || (() => {});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function sleeper() {
  await sleep(3600e3);
}

async function main() {
  const tasks = [];
  gc();
  const r0 = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) tasks.push(sleeper());
  await new Promise((r) => setImmediate(r));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  gc();
  const r1 = process.memoryUsage().rss;
  console.log(`RESULT ${N} ${dt.toFixed(6)} ${r1 - r0} - ${r1}`);
  process.exit(0);
}

main();
