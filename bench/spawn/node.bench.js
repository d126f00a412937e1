// Node.js: calling an async function starts it (its promise is the task); sleep(0) is
// one trip through the event loop: await new Promise(r => setImmediate(r)).
const N = process.argv[2] ? parseInt(process.argv[2], 10) : 200000;

const sleep0 = () => new Promise((r) => setImmediate(r));
async function child() {
  await sleep0();
}

async function main() {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    await child();
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`RESULT ${N} ${dt.toFixed(6)}`);
}

main();
