// Real BullMQ jobs on the test Redis: two run by a real Worker (one completes, one fails), then
// jobs left waiting and one delayed. Prints BullMQ's own view (getJobCounts, the next waiting
// job's timestamp) as one JSON line; the assertions are in tests/test_queue_libraries.py.
//
//   node jobs.mjs <redis-host> <redis-port> <queue-name> <waiting-jobs>

import { Queue, Worker } from "bullmq";
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

for (let i = 0; i < Number(waitingText); i += 1) {
  await queue.add("waits", { i });
}
await queue.add("later", { i: -1 }, { delay: 600000 });

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
console.log(JSON.stringify({ counts, oldest_timestamp_ms: oldest, now_ms: Date.now() }));
await queue.close();
// Clients handed in stay open after close(): ours to end.
await Promise.all(clients.map((made) => made.quit()));
