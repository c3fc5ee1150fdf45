"""``infrawatch check --url URL [--token T]``: a smoke check of a running instance, for deploy
pipelines and post-deploy Jobs.

It reads the instance only over HTTP, as a client would, so it runs anywhere with no server
settings in its environment. Each check gives one ``Result``; the worst decides the exit code:

- ``0`` healthy: every check passed;
- ``1`` degraded: the instance serves, something it depends on does not answer (e.g. Redis is
  down: ``/health`` says ``degraded``, procedures reading Redis answer ``SERVICE_UNAVAILABLE``),
  or the alert store keeps alerts in memory only;
- ``2`` unhealthy: the instance is unreachable within the timeout, ``/health`` says
  ``unhealthy`` (the primary is down), an answer is malformed or an internal error, a mutation
  is accepted without a token, or the token given is refused.

Nothing is changed on the instance: the mutation calls carry an input every procedure refuses,
so with the token they stop at validation and without it at authorization.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

# Within this the instance must answer /health/live, and each later request must complete.
TIMEOUT = 15.0
# An input no procedure accepts (inputs forbid unknown fields): a mutation refuses it after
# authorization, so calling one changes nothing.
REFUSED_INPUT = {"infrawatch_check_refused_input": True}
CONCURRENCY = 8
BATCH_SIZE = 10

# Error codes that mean "a dependency does not answer" rather than "the service is broken".
_DEGRADED_CODES = frozenset(
    {"SERVICE_UNAVAILABLE", "TIMEOUT", "GATEWAY_TIMEOUT", "BAD_GATEWAY", "TOO_MANY_REQUESTS"}
)
_BROKEN_CODES = frozenset({"INTERNAL_SERVER_ERROR", "NOT_IMPLEMENTED", "PARSE_ERROR"})


class Severity(enum.IntEnum):
    OK = 0
    DEGRADED = 1
    FAILED = 2


VERDICTS = {Severity.OK: "healthy", Severity.DEGRADED: "degraded", Severity.FAILED: "unhealthy"}


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    severity: Severity
    detail: str
    ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.severity.name.lower(),
            "detail": self.detail,
            "ms": round(self.ms, 1),
        }


class Unexpected(Exception):
    """An answer that is not what the protocol promises."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise Unexpected(f"HTTP {self.status}: not JSON: {self.body[:120]!r}") from None


def error_code(body: Any) -> str | None:
    """The tRPC code name of an error answer (JSON-RPC and tRPC both carry it in data.code)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        data = body["error"].get("data")
        code = data.get("code") if isinstance(data, dict) else None
        if isinstance(code, str):
            return code
        return "UNKNOWN"
    return None


def code_severity(code: str | None) -> Severity:
    if code is None:
        return Severity.OK
    if code in _DEGRADED_CODES:
        return Severity.DEGRADED
    if code in _BROKEN_CODES or code == "UNKNOWN":
        return Severity.FAILED
    return Severity.OK  # the caller's mistake, answered properly (a required input missing)


class SmokeCheck:
    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> list[Result]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as self._session:
            reachable = await self._timed("reachable", self._reachable)
            if reachable.severity is not Severity.OK:
                return [reachable]
            try:
                discovered = await self._discover()
            except (Unexpected, aiohttp.ClientError, TimeoutError) as exc:
                return [reachable, Result("rpc.discover", Severity.FAILED, _describe(exc))]
            queries, mutations = discovered
            checks: list[tuple[str, Callable[[], Awaitable[tuple[Severity, str]]]]] = [
                ("health", self._health),
                ("health/ready", self._ready),
                ("metrics", self._metrics),
                ("alert store", self._alert_store),
                ("dashboard page", self._page),
                ("trpc batch", lambda: self._batch(queries)),
                ("mutation without token", lambda: self._mutation_refused(mutations)),
            ]
            if self.token:
                checks.append(("token", lambda: self._token_accepted(mutations)))
            limit = asyncio.Semaphore(CONCURRENCY)

            async def bounded(name: str, check: Callable[[], Awaitable[Any]]) -> Result:
                async with limit:
                    return await self._timed(name, check)

            for path in queries:
                checks.append((f"procedure {path}", functools.partial(self._procedure, path)))
            results = await asyncio.gather(*(bounded(name, check) for name, check in checks))
            return [reachable, *results]

    # --- plumbing ---

    async def _timed(
        self, name: str, check: Callable[[], Awaitable[tuple[Severity, str]]]
    ) -> Result:
        started = time.perf_counter()
        try:
            severity, detail = await check()
        except (Unexpected, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            severity, detail = Severity.FAILED, _describe(exc)
        return Result(name, severity, detail, (time.perf_counter() - started) * 1000)

    def _headers(self, with_token: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if with_token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _get(self, path: str, *, with_token: bool = True) -> Answer:
        assert self._session is not None
        async with self._session.get(self.url + path, headers=self._headers(with_token)) as resp:
            return Answer(resp.status, await resp.read(), resp.content_type)

    async def _rpc(self, method: str, params: Any = None, *, with_token: bool = True) -> Any:
        assert self._session is not None
        call: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            call["params"] = params
        headers = self._headers(with_token) | {"Content-Type": "application/json"}
        async with self._session.post(
            self.url + "/rpc", data=orjson.dumps(call), headers=headers
        ) as resp:
            answer = Answer(resp.status, await resp.read(), resp.content_type).json()
        if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
            raise Unexpected(f"not a JSON-RPC 2.0 answer: {str(answer)[:120]}")
        if ("result" in answer) == ("error" in answer):
            raise Unexpected("a JSON-RPC answer needs exactly one of result and error")
        return answer

    # --- the checks ---

    async def _reachable(self) -> tuple[Severity, str]:
        """``/health/live`` until it answers 200, within the timeout."""
        deadline = time.monotonic() + self.timeout
        last = "no answer"
        while True:
            try:
                answer = await asyncio.wait_for(
                    self._get("/health/live"), max(0.1, deadline - time.monotonic())
                )
                if answer.status == 200:
                    return Severity.OK, "/health/live answers 200"
                last = f"/health/live answers {answer.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = _describe(exc)
            if time.monotonic() >= deadline:
                return Severity.FAILED, f"unreachable within {self.timeout:g} s: {last}"
            await asyncio.sleep(0.5)

    async def _discover(self) -> tuple[list[str], list[str]]:
        answer = await self._rpc("rpc.discover")
        code = error_code(answer)
        if code == "UNAUTHORIZED" and self.token:
            raise Unexpected("the token was refused (UNAUTHORIZED): check --token")
        if code == "UNAUTHORIZED":
            raise Unexpected("reading needs a token here (READ_TOKENS_REQUIRED): give --token")
        if code is not None:
            raise Unexpected(f"rpc.discover failed: {code}")
        methods = answer["result"].get("methods", [])
        queries: list[str] = []
        mutations: list[str] = []
        for method in methods:
            kind = method["tags"][0]["name"] if method.get("tags") else "query"
            if method["name"] == "rpc.discover":
                continue
            (mutations if kind == "mutation" else queries).append(method["name"])
        if not queries:
            raise Unexpected("rpc.discover lists no queries")
        return queries, mutations

    async def _health(self) -> tuple[Severity, str]:
        report = (await self._get("/health")).json()
        status = report.get("status")
        reasons = "; ".join(report.get("reasons") or [])
        severity = {"healthy": Severity.OK, "degraded": Severity.DEGRADED}.get(
            status, Severity.FAILED
        )
        return severity, f"{status}" + (f": {reasons}" if reasons else "")

    async def _ready(self) -> tuple[Severity, str]:
        answer = await self._get("/health/ready")
        severity = Severity.OK if answer.status == 200 else Severity.FAILED
        return severity, f"HTTP {answer.status}: {answer.json().get('status')}"

    async def _metrics(self) -> tuple[Severity, str]:
        answer = await self._get("/metrics")
        if answer.status == 401:
            return Severity.OK, "protected (401): not read (give the operator token to read it)"
        if answer.status != 200:
            return Severity.FAILED, f"HTTP {answer.status}"
        families = list(text_string_to_metric_families(answer.body.decode()))
        ours = [f for f in families if f.name.startswith("infrawatch_")]
        if not ours:
            return Severity.FAILED, "no infrawatch_* family"
        return Severity.OK, f"{len(families)} families parsed ({len(ours)} infrawatch_*)"

    async def _alert_store(self) -> tuple[Severity, str]:
        answer = await self._get("/health/detailed")
        if answer.status == 401:
            return Severity.OK, "/health/detailed needs the operator token: not read"
        store = answer.json().get("alert_store")
        if not isinstance(store, dict):
            return Severity.FAILED, "/health/detailed has no alert_store"
        if not store.get("durable"):
            return Severity.DEGRADED, "in memory only (no DATABASE_URL): lost at restart"
        if not store.get("available") or store.get("pending_rounds"):
            return (
                Severity.DEGRADED,
                f"PostgreSQL unreachable: {store.get('pending_rounds')} rounds pending",
            )
        return Severity.OK, "durable (PostgreSQL)"

    async def _page(self) -> tuple[Severity, str]:
        answer = await self._get("/", with_token=False)  # redirects to /login if it must
        if answer.status != 200 or answer.content_type != "text/html":
            return Severity.FAILED, f"HTTP {answer.status} {answer.content_type}"
        if b"</html>" not in answer.body:
            return Severity.FAILED, "the page is cut short"
        return Severity.OK, f"{len(answer.body)} bytes of HTML"

    async def _procedure(self, path: str) -> tuple[Severity, str]:
        jsonrpc = error_code(await self._rpc(path))
        trpc_answer = await self._get(f"/trpc/{quote(path)}")
        trpc = trpc_answer.json()
        if not isinstance(trpc, dict) or ("result" in trpc) == ("error" in trpc):
            raise Unexpected(f"tRPC: not one result or error: {trpc_answer.body[:120]!r}")
        trpc_code = error_code(trpc)
        severity = max(code_severity(jsonrpc), code_severity(trpc_code))
        return severity, f"jsonrpc {jsonrpc or 'ok'}, trpc {trpc_code or 'ok'}"

    async def _batch(self, queries: list[str]) -> tuple[Severity, str]:
        paths = queries[:BATCH_SIZE]
        answer = await self._get(f"/trpc/{quote(','.join(paths))}?batch=1&input={quote('{}')}")
        answers = answer.json()
        if not isinstance(answers, list) or len(answers) != len(paths):
            raise Unexpected(f"a batch of {len(paths)} answered {str(answers)[:120]}")
        severity = max(code_severity(error_code(a)) for a in answers)
        failed = sum(1 for a in answers if "error" in a)
        return severity, f"{len(paths)} calls in one request, {failed} errors"

    async def _mutation_refused(self, mutations: list[str]) -> tuple[Severity, str]:
        if not mutations:
            return Severity.OK, "no mutation listed"
        answer = await self._rpc(mutations[0], REFUSED_INPUT, with_token=False)
        code = error_code(answer)
        if code == "UNAUTHORIZED":
            return Severity.OK, f"{mutations[0]} refused: UNAUTHORIZED"
        return Severity.FAILED, f"{mutations[0]} without a token answered {code or 'a result'}"

    async def _token_accepted(self, mutations: list[str]) -> tuple[Severity, str]:
        if not mutations:
            return Severity.FAILED, "no mutation to check the token with"
        answer = await self._rpc(mutations[0], REFUSED_INPUT)
        code = error_code(answer)
        if code in ("UNAUTHORIZED", "FORBIDDEN"):
            return Severity.FAILED, f"the token was refused ({code})"
        if code is None:
            return Severity.FAILED, f"{mutations[0]} accepted an input it must refuse"
        return Severity.OK, f"accepted (then {mutations[0]} refused the check's input: {code})"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def verdict(results: list[Result]) -> Severity:
    return max((r.severity for r in results), default=Severity.FAILED)


def render_text(url: str, results: list[Result]) -> str:
    lines = [f"{r.severity.name.lower():8} {r.name}: {r.detail} ({r.ms:.0f} ms)" for r in results]
    overall = verdict(results)
    lines.append(f"infrawatch check {url}: {VERDICTS[overall]} (exit {int(overall)})")
    return "\n".join(lines)


def render_json(url: str, results: list[Result]) -> bytes:
    overall = verdict(results)
    return orjson.dumps(
        {
            "url": url,
            "status": VERDICTS[overall],
            "exit_code": int(overall),
            "checks": [r.as_json() for r in results],
        },
        option=orjson.OPT_INDENT_2,
    )
