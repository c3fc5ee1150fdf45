// tRPC v11's own standalone HTTP server answering bench.payload, the document every server of
// bench/bench_deploy_targets.py answers. Usage: node server.mjs PORT
import { initTRPC } from "@trpc/server";
import { createHTTPServer } from "@trpc/server/adapters/standalone";

const t = initTRPC.create();
const PAYLOAD = {
  items: Array.from({ length: 16 }, (_, i) => ({
    id: i,
    name: `item-${i}`,
    value: i * 1.5,
    ok: i % 2 === 0,
  })),
};
const router = t.router({ bench: t.router({ payload: t.procedure.query(() => PAYLOAD) }) });
const port = Number(process.argv[2]);
createHTTPServer({ router }).listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
