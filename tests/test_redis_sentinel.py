"""Sentinel mode: the client finds the master by name, and after ``SENTINEL FAILOVER`` writes
succeed again on the new master within 10 s, without a restart; the hot tier follows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from server.config import HostPort, Settings
from server.errors import Unavailable
from server.resilience.models import BreakerState
from tests.cache_support import redis_of, returns, running_cache
from tests.stack import RedisSentinelGroup
from tests.stack.process import wait_for
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def failed_over_group(redis_sentinel_group: RedisSentinelGroup) -> Iterator[RedisSentinelGroup]:
    """The session's Sentinel group, handed back with its original master: later tests
    expect ``group.master`` to be the master."""
    group = redis_sentinel_group
    yield group
    original = (group.master.host, group.master.port)
    if group.sentinel.master_address() == original:
        return
    # The old master must first be demoted by Sentinel and in sync before it can be promoted.
    wait_for(
        lambda: group.master.info("replication").get("master_link_status") == "up",
        what="the old master replicating from the new one",
        timeout=60,
    )
    group.sentinel.wait_for_replicas(1, timeout=60)
    wait_for(
        lambda: group.sentinel.cli("SENTINEL", "FAILOVER", group.master_name) == "OK",
        what="a failover back accepted",
        timeout=60,
        interval=0.5,
    )
    wait_for(
        lambda: group.sentinel.master_address() == original,
        what="the original master back",
        timeout=60,
    )
    group.replica.wait_for_sync(timeout=60)
    group.sentinel.wait_for_replicas(1, timeout=60)


def sentinel_settings(group: RedisSentinelGroup) -> Settings:
    return Settings(
        redis_sentinel_hosts=(HostPort(group.sentinel.host, group.sentinel.port),),
        redis_master_name=group.master_name,
        breaker_reset_timeout=0.5,
    )


async def test_failover_writes_succeed_again_within_10_seconds(
    failed_over_group: RedisSentinelGroup,
) -> None:
    group = failed_over_group
    async with running_cache(sentinel_settings(group)) as cache:
        client = redis_of(cache)
        assert client.mode == "sentinel"
        written = await cache.fetch("s", "before", returns("written before"), ttl=60)
        assert written.status == "MISS"
        # Replication is asynchronous and a forced failover does not wait for it.
        assert await client.execute(client.raw.wait, 1, 5000) == 1
        old_master = group.sentinel.master_address()
        servers = {s.port: s for s in (group.master, group.replica)}
        assert (await client.info())["tcp_port"] == old_master[1]

        assert group.sentinel.cli("SENTINEL", "FAILOVER", group.master_name) == "OK"
        started = time.monotonic()
        attempt = 0

        async def written_to_new_master() -> bool:
            nonlocal attempt
            attempt += 1
            try:
                await client.execute(client.raw.set, f"after-{attempt}", "x")
            except Unavailable:
                return False
            host, port = group.sentinel.master_address()
            if port == old_master[1]:
                return False
            # Followed, not just reached: a fresh connection can reach the new master before the
            # client's watch has closed the pooled ones still open to the old one.
            followed = client.master_address is not None and client.master_address[1] == port
            return followed and servers[port].cli("GET", f"after-{attempt}") == "x"

        await eventually(written_to_new_master, what="a write on the new master", timeout=10)
        took = time.monotonic() - started
        assert took < 10
        new_port = group.sentinel.master_address()[1]
        assert new_port != old_master[1]
        assert (await client.info())["tcp_port"] == new_port
        before = await cache.fetch("s", "before", returns("recomputed"), ttl=60)
        assert (before.value, before.status) == ("written before", "HIT")  # replicated in time

        # The hot tier's tracking connection follows the master too.
        tracker = cache.tracker
        assert tracker is not None
        await eventually(
            lambda: cache.near.active and tracker.connects >= 2, what="tracking on new master"
        )
        ids = servers[new_port].cli("CLIENT", "LIST", "TYPE", "normal")
        assert f"id={tracker.client_id} " in ids
        after = await cache.fetch("s", "after", returns("new"), ttl=60)
        assert (after.value, after.status) == ("new", "MISS")
        assert orjson.loads(servers[new_port].cli("GET", cache.key("s", "after")))[3] == "new"
        again = await cache.fetch("s", "after", returns("recomputed"), ttl=60)
        assert (again.value, again.status) == ("new", "HIT")
        print(f"failover: writes on the new master after {took:.2f}s ({attempt} attempts)")


async def test_master_killed_writes_resume_within_10_seconds(stack_dir: Path) -> None:
    """The master dies (not a forced failover): its failures trip the breaker (the default
    30 s reset), yet writes resume on the promoted replica within 10 s and the hot tier
    follows. Asking the sentinels bypasses the breaker, and the move closes it; before, both
    waited for the breaker to half-open (31 s)."""
    # A group of its own (the session's must keep its master), named apart from it.
    with RedisSentinelGroup(stack_dir, master_name="killed") as group:
        settings = Settings(
            redis_sentinel_hosts=(HostPort(group.sentinel.host, group.sentinel.port),),
            redis_master_name=group.master_name,
        )
        assert settings.breakers.reset_timeout == 30.0
        async with running_cache(settings) as cache:
            client = redis_of(cache)
            await client.execute(client.raw.set, "before", "x")
            assert await client.execute(client.raw.wait, 1, 5000) == 1
            old_master = client.master_address
            assert old_master == (group.master.host, group.master.port)

            group.master.stop()
            started = time.monotonic()
            failures = 0

            async def written_to_new_master() -> bool:
                nonlocal failures
                try:
                    await client.execute(client.raw.set, "after", "y")
                except Unavailable:
                    failures += 1
                    return False
                return client.master_address == (group.replica.host, group.replica.port)

            await eventually(
                written_to_new_master, what="a write on the promoted replica", timeout=10
            )
            assert time.monotonic() - started < 10
            assert failures >= settings.breakers.failure_threshold  # the breaker did trip
            assert client.breaker.state is BreakerState.CLOSED
            assert group.replica.cli("GET", "after") == "y"
            assert group.replica.cli("GET", "before") == "x"
            tracker = cache.tracker
            assert tracker is not None
            await eventually(
                lambda: cache.near.active and tracker.connects >= 2,
                what="tracking on the promoted replica",
                timeout=10,
            )
