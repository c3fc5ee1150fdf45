// Real BullMQ jobs on the test Redis: two run by a real Worker (one completes, one fails), one
// held by a worker (active), jobs left waiting, one delayed, one prioritized, a parent waiting
// for its child; then the queue is paused. Prints BullMQ's own view (getJobCounts before the
// pause, the next waiting job's timestamp, isPaused) as one JSON line; the assertions are in
// tests/test_queue_libraries.py.
//
//   node jobs.mjs <redis-host> <redis-port> <queue-name> <waiting-jobs>

import { FlowProducer, Queue, Worker } from "bullmq";
import { Redis } from "ioredis";

const [host, port, name, waitingText] = process.argv.slice(2);
if (!host || !port || !name || !waitingText) {
  console.error("usage: node jobs.mjs <redis-host> <redis-port> <queue-name> <waiting-jobs>");
  process.exit(2);
}
// BullMQ 6 under ESM takes a client, not options. A Worker's blocking connection must never
// give up on a command (BullMQ insists).
const clients = [];
const client = () => {
  const made = new Redis({ host, port: Number(port), maxRetriesPerRequest: null });
  clients.push(made);
  return made;
};
const queue = new Queue(name, { connection: client() });

await queue.add("succeeds", { n: 1 });
await queue.add("fails", { n: 2 }, { attempts: 1 });
const worker = new Worker(
  name,
  async (job) => {
    if (job.name === "fails") throw new Error("this job fails on purpose");
    return job.data.n * 2;
  },
  { connection: client() },
);
const deadline = Date.now() + 20000;
for (;;) {
  const done = await queue.getJobCounts("completed", "failed");
  if (done.completed === 1 && done.failed === 1) break;
  if (Date.now() > deadline) throw new Error(`jobs did not finish: ${JSON.stringify(done)}`);
  await new Promise((resolve) => setTimeout(resolve, 20));
}
await worker.close();

// One job taken by a worker and held (manual processing): active.
await queue.add("held", { i: 0 });
const holder = new Worker(name, null, { connection: client() });
const held = await holder.getNextJob("held-by-the-test");
if (!held) throw new Error("no job to hold");

for (let i = 0; i < Number(waitingText); i += 1) {
  await queue.add("waits", { i });
}
await queue.add("later", { i: -1 }, { delay: 600000 });
await queue.add("urgent", { i: -2 }, { priority: 3 });
// A parent waits for its child: the parent is waiting-children, the child waits.
const flows = new FlowProducer({ connection: client() });
await flows.add({ name: "parent", queueName: name, children: [{ name: "child", queueName: name }] });
await flows.close();

const counts = await queue.getJobCounts(
  "wait",
  "paused",
  "prioritized",
  "delayed",
  "waiting-children",
  "active",
  "completed",
  "failed",
);
// The job a worker would take next: the oldest waiting one.
const waiting = await queue.getWaiting();
const oldest = waiting.reduce((min, job) => Math.min(min, job.timestamp), Infinity);
await queue.pause();
const paused = await queue.isPaused();
console.log(JSON.stringify({ counts, oldest_timestamp_ms: oldest, paused, now_ms: Date.now() }));
await holder.close(true);
await queue.close();
// Clients handed in stay open after close(): ours to end.
await Promise.all(clients.map((made) => made.quit()));
