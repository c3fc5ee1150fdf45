"""The hot tier's guard against stale stores, step by step: which reads from Redis may store
what they read, when invalidations and flushes arrive while reads of the key are in flight."""

from __future__ import annotations

from server.cache.entry import Entry
from server.cache.near import NearTier
from server.glob import Glob

KEY = "infrawatch:cache:ns:k"


def tier() -> NearTier:
    near = NearTier(max_items=100)
    near.activate()
    return near


def entry(value: object) -> Entry:
    return Entry.new(value, 60.0, 120.0)


def stored(near: NearTier) -> object:
    found = near.get(KEY, 0.0)
    return None if found is None else found.value


def test_a_read_without_an_invalidation_stores() -> None:
    near = tier()
    token = near.begin(KEY)
    near.finish(KEY, token, entry("v"))
    assert stored(near) == "v"


def test_a_read_overtaken_by_an_invalidation_does_not_store() -> None:
    near = tier()
    token = near.begin(KEY)
    near.invalidate([KEY])
    near.finish(KEY, token, entry("old"))
    assert stored(near) is None


def test_a_read_begun_after_the_invalidation_stores_while_older_reads_are_in_flight() -> None:
    # A hot key under load: some read of it is always in flight, so the key's reads never
    # drain. Each read is judged by when it began.
    near = tier()
    first = near.begin(KEY)
    near.invalidate([KEY])
    second = near.begin(KEY)
    near.finish(KEY, first, entry("old"))
    assert stored(near) is None
    third = near.begin(KEY)
    near.finish(KEY, second, entry("new"))
    assert stored(near) == "new"
    near.finish(KEY, third, entry("new"))
    assert stored(near) == "new"


def test_every_read_in_flight_at_an_invalidation_is_refused() -> None:
    near = tier()
    tokens = [near.begin(KEY) for _ in range(3)]
    near.invalidate([KEY])
    after = near.begin(KEY)
    near.invalidate([KEY])  # a second write, while the read begun in between is in flight
    last = near.begin(KEY)
    for token in [*tokens, after]:
        near.finish(KEY, token, entry("old"))
        assert stored(near) is None
    near.finish(KEY, last, entry("new"))
    assert stored(near) == "new"


def test_an_invalidation_of_another_key_spoils_nothing() -> None:
    near = tier()
    token = near.begin(KEY)
    near.invalidate(["infrawatch:cache:ns:other"])
    near.finish(KEY, token, entry("v"))
    assert stored(near) == "v"


def test_a_flush_refuses_reads_begun_before_it_only() -> None:
    near = tier()
    before = near.begin(KEY)
    near.flush()
    after = near.begin(KEY)
    near.finish(KEY, before, entry("old"))
    assert stored(near) is None
    near.finish(KEY, after, entry("new"))
    assert stored(near) == "new"


async def test_a_pattern_deletion_refuses_reads_in_flight() -> None:
    near = tier()
    token = near.begin(KEY)
    assert await near.delete_matching(Glob("infrawatch:cache:ns:*")) == 0
    near.finish(KEY, token, entry("old"))
    assert stored(near) is None


def test_nothing_is_stored_while_inactive_and_no_read_is_left_behind() -> None:
    near = NearTier(max_items=100)
    token = near.begin(KEY)
    near.finish(KEY, token, entry("v"))
    assert stored(near) is None
    near.activate()
    for _ in range(2):
        near.finish(KEY, near.begin(KEY), None)  # failed reads end too
    assert near._reading == {}
