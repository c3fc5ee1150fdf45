// The unmodified @trpc/client v11 against a running infrawatch, through httpLink and
// httpBatchLink (no transformer). Prints one JSON summary of what it saw; the assertions are
// in tests/test_trpc_node_client.py.
//
//   node check.mjs <base-url> <operator-token> [<breaker-name>]
//   (or INFRAWATCH_URL, INFRAWATCH_TOKEN, INFRAWATCH_BREAKER)

import { readFileSync } from "node:fs";

import {
  createTRPCClient,
  httpBatchLink,
  httpLink,
  TRPCClientError,
} from "@trpc/client";

const base = process.argv[2] ?? process.env.INFRAWATCH_URL;
const token = process.argv[3] ?? process.env.INFRAWATCH_TOKEN;
const breaker = process.argv[4] ?? process.env.INFRAWATCH_BREAKER ?? "redis-cache";
if (!base || !token) {
  console.error("usage: node check.mjs <base-url> <operator-token> [<breaker-name>]");
  process.exit(2);
}

// Every HTTP request the links make, to tell one batched request from several.
const requests = [];
const countingFetch = (url, init) => {
  const request = { method: init?.method ?? "GET", url: String(url) };
  requests.push(request);
  return fetch(url, init).then((response) => {
    request.status = response.status;
    return response;
  });
};

function makeClient(link, withToken) {
  return createTRPCClient({
    links: [
      link({
        url: `${base}/trpc`,
        fetch: countingFetch,
        headers: withToken ? { authorization: `Bearer ${token}` } : {},
      }),
    ],
  });
}

function describeError(err) {
  if (!(err instanceof TRPCClientError)) {
    return { kind: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
  }
  return {
    kind: "TRPCClientError",
    message: err.message,
    code: err.data?.code ?? null,
    httpStatus: err.data?.httpStatus ?? null,
    path: err.data?.path ?? null,
    jsonrpcCode: err.shape?.code ?? null,
    responseStatus: err.meta?.response?.status ?? null,
  };
}

async function outcome(promise) {
  try {
    return { ok: true, data: await promise };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

// Runs `start` (which must start its calls synchronously, so httpBatchLink can batch them)
// and returns the outcomes with the requests they took.
async function withRequests(start) {
  const before = requests.length;
  const outcomes = await Promise.all(start().map(outcome));
  return { outcomes, requests: requests.slice(before) };
}

async function exercise(link) {
  const anonymous = makeClient(link, false);
  const operator = makeClient(link, true);
  const monitoring = anonymous.monitoring;
  return {
    query: await withRequests(() => [monitoring.unifiedHealth.query()]),
    severalQueries: await withRequests(() => [
      monitoring.unifiedHealth.query(),
      monitoring.circuitBreakerStatus.query(),
      monitoring.unifiedHealth.query(),
    ]),
    mixedOutcomes: await withRequests(() => [
      monitoring.unifiedHealth.query(),
      anonymous.nope.nothing.query(),
      monitoring.unifiedHealth.query({ unexpected: 1 }),
    ]),
    mutationWithToken: await withRequests(() => [
      operator.monitoring.resetCircuitBreaker.mutate({ name: breaker }),
    ]),
    mutationWithoutToken: await withRequests(() => [
      monitoring.resetCircuitBreaker.mutate({ name: breaker }),
    ]),
    unknownProcedure: await withRequests(() => [anonymous.nope.nothing.query()]),
    badInput: await withRequests(() => [
      operator.monitoring.resetCircuitBreaker.mutate({ name: 42 }),
    ]),
  };
}

// A batched GET carries every input in its URL: ~20 KB passes the server's parser (the
// procedure then refuses the input it does not take); past MAX_URL_BYTES (64 KiB by default)
// the server answers a JSON error that the client turns into a typed one.
async function longUrls() {
  const client = makeClient(httpBatchLink, false);
  const calls = (padding) => () =>
    Array.from({ length: 10 }, () => client.monitoring.unifiedHealth.query({ padding }));
  return {
    about20k: await withRequests(calls("x".repeat(2_000))),
    over64k: await withRequests(calls("x".repeat(8_000))),
  };
}

const version = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;

const summary = {
  versions: { client: version("@trpc/client"), server: version("@trpc/server") },
  httpLink: await exercise(httpLink),
  httpBatchLink: await exercise(httpBatchLink),
  longUrls: await longUrls(),
};
console.log(JSON.stringify(summary, null, 2));
