"""Cost control (server/rpc/cost.py): classes checked at start-up, bounds per class, shedding
in each wire format, coalescing and the micro-cache of expensive reads."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, ConfigDict

from server.app import create_app
from server.appkeys import ADMISSION
from server.config import Settings
from server.errors import ErrorCode, RpcError
from server.rpc.cost import Admission, Coalescer, Cost
from server.rpc.router import ANONYMOUS, Caller, Context, NoInput, Router, mutation, query
from tests.assembly import real_catalogue
from web.appkeys import GATHERINGS

TOKEN = "alice-token-0123456789"


class Slow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.3
    tag: str = ""


class Runs:
    """How often each handler actually ran, and how many ran at once at most."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.active = 0
        self.peak = 0

    async def slow(self, ctx: Context, inp: Slow) -> dict[str, Any]:
        self.count[inp.tag] = self.count.get(inp.tag, 0) + 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(inp.seconds)
        finally:
            self.active -= 1
        return {"tag": inp.tag, "run": self.count[inp.tag]}

    async def touch(self, ctx: Context, _: NoInput) -> dict[str, bool]:
        return {"ok": True}

    async def cheap(self, ctx: Context, _: NoInput) -> dict[str, bool]:
        return {"ok": True}


def procedures(runs: Runs) -> list[Any]:
    return [
        query("test.expensive", runs.slow, input=Slow, options=(Cost.EXPENSIVE,)),
        query("test.cheap", runs.cheap, options=(Cost.CHEAP,)),
        mutation("test.touch", runs.touch, options=(Cost.OPERATOR,)),
    ]


def admission(**overrides: Any) -> Admission:
    values: dict[str, Any] = {
        "cheap": 8,
        "expensive": 2,
        "operator": 2,
        "queue_wait": 0.1,
        "coalesce_ttl": 1.0,
    }
    return Admission(**(values | overrides))


def wire(protocol: Any = "jsonrpc", caller: Caller = ANONYMOUS) -> Context:
    return Context(caller=caller, protocol=protocol)


# --- declared at start-up ---


def test_a_procedure_without_a_cost_class_stops_the_router_with_a_clear_message() -> None:
    async def handler(ctx: Context, _: NoInput) -> None:
        return None

    with pytest.raises(ValueError, match="declares no cost class") as refused:
        Router([query("database.topQueries", handler)], middleware=[admission()])
    message = str(refused.value)
    assert "'database.topQueries' declares no cost class" in message
    assert "Cost.CHEAP" in message and "Cost.EXPENSIVE" in message
    assert "server/rpc/cost.py" in message

    with pytest.raises(ValueError, match=r"a mutation is Cost\.OPERATOR"):
        Router([mutation("x.y", handler, options=(Cost.CHEAP,))], middleware=[admission()])
    with pytest.raises(ValueError, match="which is for mutations"):
        Router([query("x.y", handler, options=(Cost.OPERATOR,))], middleware=[admission()])


def test_every_procedure_of_the_catalogue_declares_its_class() -> None:
    classes = {p.path: p.option(Cost) for p in real_catalogue()}
    assert None not in classes.values(), [path for path, c in classes.items() if c is None]
    for path in (
        "monitoring.cacheKeyStats",
        "monitoring.queueStats",
        "monitoring.unifiedMetrics",
        "monitoring.connectionPoolStats",
        "monitoring.partitionMetrics",
    ):
        assert classes[path] is Cost.EXPENSIVE, path
    assert classes["monitoring.circuitBreakerStatus"] is Cost.CHEAP
    assert classes["alerts.acknowledge"] is Cost.OPERATOR


# --- coalescing and the micro-cache ---


async def test_identical_expensive_calls_run_once_and_the_answer_serves_for_the_ttl() -> None:
    runs = Runs()
    gate = admission(expensive=1)
    router = Router(procedures(runs), middleware=[gate])
    answers = await asyncio.gather(
        *(router.call("test.expensive", {"tag": "a"}, wire()) for _ in range(50))
    )
    # Fifty callers, one run: past the bound of one, yet nobody was shed.
    assert runs.count == {"a": 1}
    assert all(a == {"tag": "a", "run": 1} for a in answers)
    assert gate.gates[Cost.EXPENSIVE].shed == 0
    # Within the TTL, the same answer; another input runs on its own.
    assert await router.call("test.expensive", {"tag": "a"}, wire()) == {"tag": "a", "run": 1}
    assert (await router.call("test.expensive", {"tag": "b"}, wire()))["run"] == 1
    # An operator's mutation clears it: the next read is fresh.
    await router.call("test.touch", None, wire(caller=Caller("alice")))
    assert await router.call("test.expensive", {"tag": "a"}, wire()) == {"tag": "a", "run": 2}


async def test_the_micro_cache_expires() -> None:
    runs = Runs()
    router = Router(procedures(runs), middleware=[admission(coalesce_ttl=0.2)])
    await router.call("test.expensive", {"tag": "a", "seconds": 0}, wire())
    await asyncio.sleep(0.25)
    await router.call("test.expensive", {"tag": "a", "seconds": 0}, wire())
    assert runs.count == {"a": 2}


# --- bounds and shedding ---


async def test_past_the_bound_a_call_waits_briefly_then_is_shed() -> None:
    runs = Runs()
    gate = admission(expensive=2, queue_wait=0.1)
    router = Router(procedures(runs), middleware=[gate])
    outcomes = await asyncio.gather(
        *(router.call("test.expensive", {"tag": f"t{n}"}, wire()) for n in range(6)),
        return_exceptions=True,
    )
    shed = [o for o in outcomes if isinstance(o, RpcError)]
    assert runs.peak == 2  # never more than the bound at once
    assert len(shed) == 4
    assert all(o.code is ErrorCode.TOO_MANY_REQUESTS for o in shed)
    assert shed[0].details == {"retryAfter": 1.0}
    assert "too many expensive calls at once (at most 2)" in shed[0].message
    # Cheap calls and operators' mutations have their own places: never shed by this.
    busy = [
        asyncio.create_task(router.call("test.expensive", {"tag": f"u{n}"}, wire()))
        for n in range(2)
    ]
    await asyncio.sleep(0.05)
    assert await router.call("test.cheap", None, wire()) == {"ok": True}
    operator = wire(caller=Caller("alice"))
    assert await router.call("test.touch", None, operator) == {"ok": True}
    await asyncio.gather(*busy)


async def test_in_process_calls_are_not_bounded() -> None:
    runs = Runs()
    router = Router(procedures(runs), middleware=[admission(expensive=1, queue_wait=0.0)])
    outcomes = await asyncio.gather(
        *(router.call("test.expensive", {"tag": f"t{n}"}, wire("internal")) for n in range(5))
    )
    assert len(outcomes) == 5 and runs.peak == 5


# --- over the wire ---


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    runs = Runs()
    settings = Settings(
        auth_tokens={"alice": TOKEN},
        rpc_expensive_concurrency=1,
        rpc_queue_wait=0.05,
        max_batch_size=10,
    )
    app = create_app(settings, procedures=procedures(runs))
    return await aiohttp_client(app)


async def test_trpc_sheds_with_429_and_retry_after(client: TestClient) -> None:
    async def one(n: int) -> Any:
        query_input = orjson.dumps({"tag": f"t{n}", "seconds": 0.3}).decode()
        return await client.get("/trpc/test.expensive", params={"input": query_input})

    responses = await asyncio.gather(*(one(n) for n in range(4)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 429, 429, 429]
    shed = next(r for r in responses if r.status == 429)
    assert shed.headers["Retry-After"] == "1"
    body = await shed.json()
    assert body["error"]["data"]["code"] == "TOO_MANY_REQUESTS"
    assert body["error"]["data"]["httpStatus"] == 429
    assert body["error"]["code"] == -32029


async def test_jsonrpc_batch_members_count_one_by_one(client: TestClient) -> None:
    batch = [
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "test.expensive",
            "params": {"tag": f"t{n}", "seconds": 0.2},
        }
        for n in range(4)
    ]
    response = await client.post("/rpc", json=batch)
    assert response.status == 200
    answers = {a["id"]: a for a in await response.json()}
    ok = [a for a in answers.values() if "result" in a]
    shed = [a for a in answers.values() if "error" in a]
    assert len(ok) == 1 and len(shed) == 3
    assert {a["error"]["data"]["code"] for a in shed} == {"TOO_MANY_REQUESTS"}
    assert {a["error"]["code"] for a in shed} == {-32029}
    # A batch has a maximum size.
    too_big = [{"jsonrpc": "2.0", "id": n, "method": "test.cheap"} for n in range(11)]
    response = await client.post("/rpc", json=too_big)
    assert response.status == 413
    assert client.app is not None
    assert client.app[ADMISSION].gates[Cost.EXPENSIVE].shed >= 3


async def test_a_flood_of_page_views_shares_one_gathering(aiohttp_client: Any) -> None:
    settings = Settings(session_secret="s" * 32, rpc_coalesce_ttl=1.0)
    client = await aiohttp_client(create_app(settings))
    assert client.app is not None
    gatherings = client.app[GATHERINGS]
    pages = await asyncio.gather(*(client.get("/") for _ in range(20)))
    assert [p.status for p in pages] == [200] * 20
    # Twenty anonymous views, one gathering of the page's procedures.
    assert gatherings.runs == 1
    assert gatherings.shared == 19


async def test_a_cancelled_leader_hands_the_run_to_a_follower() -> None:
    coalescer: Coalescer[str] = Coalescer(0.0)
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "done"

    leader = asyncio.create_task(coalescer.run("k", slow))
    await started.wait()
    follower = asyncio.create_task(coalescer.run("k", slow))
    await asyncio.sleep(0)  # the follower waits on the leader's run
    leader.cancel()
    assert await follower == "done"  # not cancelled with it: it ran the call itself
    assert leader.cancelled()
    assert coalescer.runs == 2


def test_the_documented_classes_are_the_declared_ones() -> None:
    """docs/procedures.md's table of cost classes names every procedure under its class."""
    table = (Path(__file__).resolve().parent.parent / "docs" / "procedures.md").read_text()
    documented: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and cells[1].split(":")[0] in {c.value for c in Cost}:
            for name in re.findall(r"`([\w.]+)`", cells[2]):
                documented[name] = cells[1].split(":")[0]
    declared = {p.path: p.option(Cost) for p in real_catalogue()}
    declared["rpc.discover"] = Cost.CHEAP
    assert documented == {path: cost.value for path, cost in declared.items() if cost}
