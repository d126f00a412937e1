// Node.js: no async queue in the standard library; this is the usual one: an array of
// items and an array of waiting resolvers (getters; putters when bounded).
// Usage: node node.bench.js N pingpong|pipeline   -> RESULT <ops> <seconds>
const N = process.argv[2] ? parseInt(process.argv[2], 10) : 200000;
const MODE = process.argv[3] || "pingpong";

class Queue {
  constructor(max = Infinity) { this.items = []; this.head = 0; this.getters = []; this.putters = []; this.max = max; }
  size() { return this.items.length - this.head; }
  async put(v) {
    while (this.size() >= this.max) await new Promise((r) => this.putters.push(r));
    if (this.getters.length) { this.getters.shift()(v); return; }
    this.items.push(v);
  }
  async get() {
    if (this.size() === 0) return new Promise((r) => this.getters.push(r)).then((v) => { this.wakePutter(); return v; });
    const v = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0; }
    this.wakePutter();
    return v;
  }
  wakePutter() { if (this.putters.length) this.putters.shift()(); }
}

async function pingpong() {
  const q1 = new Queue(), q2 = new Queue();
  const peer = (async () => { for (let i = 0; i < N; i++) await q2.put(await q1.get()); })();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    await q1.put(i);
    if ((await q2.get()) !== i) throw new Error("order");
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await peer;
  return dt;
}

async function pipeline() {
  const q1 = new Queue(64), q2 = new Queue(64);
  const t0 = process.hrtime.bigint();
  const producer = (async () => { for (let i = 1; i <= N; i++) await q1.put(i); })();
  const worker = (async () => { for (let i = 0; i < N; i++) await q2.put((await q1.get()) * 2); })();
  let s = 0;
  for (let i = 0; i < N; i++) s += await q2.get();
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await producer; await worker;
  if (s !== N * (N + 1)) throw new Error("sum " + s);
  return dt;
}

(MODE === "pingpong" ? pingpong() : pipeline()).then((dt) => console.log(`RESULT ${N} ${dt.toFixed(6)}`));
