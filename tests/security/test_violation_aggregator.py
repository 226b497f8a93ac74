"""The ``security.violation`` aggregator on an injected clock: one batch per key and
interval (boundaries at, just below and just above it), exact counts, a bounded number of
keys with an overflow bucket, bounded samples, restore after a failed write, drain; and the
async recorder's loop and shutdown flush against a writer that keeps what it is given."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from control.violations import (
    MAX_DISTINCT_SOURCES,
    OVERFLOW_SOURCE,
    ViolationAggregator,
    ViolationBatch,
    ViolationKey,
    ViolationRecorder,
)

EPS = 1e-6


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def bad_token(agg: ViolationAggregator | ViolationRecorder, source: str = "10.0.0.1",
              path: str = "/api/v1/routes") -> None:
    agg.record(source, "unauthorized", "anonymous", f"GET {path}",
               "a valid bearer token is required")


def test_first_refusal_is_due_at_once() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    assert agg.next_due() is None and agg.due() == []
    bad_token(agg)
    assert agg.next_due() == clock.t
    (batch,) = agg.due()
    assert batch.key == ViolationKey("10.0.0.1", "unauthorized", "anonymous")
    assert batch.count == 1 and batch.first == batch.last == clock.t
    assert agg.pending == 0 and agg.due() == []


@pytest.mark.parametrize(("offset", "due"), [(-EPS, False), (0.0, True), (EPS, True)])
def test_next_batch_waits_exactly_one_interval(offset: float, due: bool) -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    start = clock.t
    bad_token(agg)
    assert len(agg.due()) == 1  # written at `start`
    clock.t = start + 1
    for _ in range(5):
        bad_token(agg)
    assert agg.next_due() == start + 10
    clock.t = start + 10 + offset
    batches = agg.due()
    assert [b.count for b in batches] == ([5] if due else [])
    assert agg.pending == (0 if due else 5)


@pytest.mark.parametrize(("offset", "held_back"), [(-EPS, True), (0.0, False), (EPS, False)])
def test_a_quiet_key_is_due_at_once_again_after_an_interval(
    offset: float, held_back: bool
) -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    start = clock.t
    bad_token(agg)
    agg.due()
    clock.t = start + 10 + offset
    bad_token(agg)
    assert len(agg.due()) == (0 if held_back else 1)


def test_a_flood_becomes_a_handful_of_batches_with_exact_counts() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    start, batches = clock.t, []
    for i in range(3000):  # 3,000 bad tokens over 30 s, the loop looking after each one
        clock.t = start + i * 0.01
        bad_token(agg, path=f"/api/v1/routes/r{i % 50}")
        batches += agg.due()
    batches += agg.drain()
    assert sum(b.count for b in batches) == 3000
    assert len(batches) == 4  # at 0 s, 10 s, 20 s, and what was left at the end
    assert [b.first - start for b in batches[:2]] == [0.0, pytest.approx(0.01)]
    assert all(len(b.requests) == 10 for b in batches[1:]) and batches[1].requests_truncated
    assert batches[0].requests == ("GET /api/v1/routes/r0",)
    assert not batches[0].requests_truncated


def test_keys_are_source_kind_and_user() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    bad_token(agg, "10.0.0.1")
    bad_token(agg, "10.0.0.2")
    agg.record("10.0.0.1", "forbidden", "vic", "PUT /api/v1/routes/r/weights", "no role")
    agg.record("10.0.0.1", "forbidden", "abe", "PUT /api/v1/routes/r/weights", "no role")
    agg.record("10.0.0.1", "forbidden", "abe", "PUT /api/v1/routes/r/weights", "no role")
    got = {(b.key.source, b.key.kind, b.key.actor): b.count for b in agg.due()}
    assert got == {("10.0.0.1", "unauthorized", "anonymous"): 1,
                   ("10.0.0.2", "unauthorized", "anonymous"): 1,
                   ("10.0.0.1", "forbidden", "vic"): 1, ("10.0.0.1", "forbidden", "abe"): 2}


def test_distinct_keys_are_capped_with_an_overflow_bucket() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock, max_keys=3, max_samples=4)
    written: list[ViolationBatch] = []
    for i in range(10):  # ten sources, written one by one: still only three keys live
        bad_token(agg, f"10.0.0.{i}")
        written += agg.due()
    written += agg.drain()
    own = [b for b in written if b.key.source != OVERFLOW_SOURCE]
    overflow = [b for b in written if b.key.source == OVERFLOW_SOURCE]
    assert [b.key.source for b in own] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert [b.count for b in overflow] == [1, 6]  # due at once, then held for the interval
    assert overflow[0].key == ViolationKey(OVERFLOW_SOURCE, "unauthorized", OVERFLOW_SOURCE)
    assert overflow[0].sources == ("10.0.0.3",)
    assert overflow[1].sources == ("10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7")
    assert overflow[1].details()["sources"] == list(overflow[1].sources)
    assert sum(b.count for b in written) == 10
    # an interval later the written keys are forgotten and new sources get their own keys
    clock.t += 10
    bad_token(agg, "10.0.1.1")
    assert [b.key.source for b in agg.due()] == ["10.0.1.1"]


def test_overflow_counts_its_distinct_sources_up_to_a_cap() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock, max_keys=1)
    bad_token(agg, "own")
    agg.due()
    for i in range(MAX_DISTINCT_SOURCES + 5):  # each twice: counted once
        bad_token(agg, f"s{i}")
        bad_token(agg, f"s{i}")
    batches = agg.drain()
    (overflow,) = [b for b in batches if b.key.source == OVERFLOW_SOURCE]
    details = overflow.details()
    assert details["count"] == 2 * (MAX_DISTINCT_SOURCES + 5)
    assert details["distinct_sources"] == MAX_DISTINCT_SOURCES
    assert details["distinct_sources_capped"] is True
    assert len(details["sources"]) == 10
    # a failed write keeps the set: merged with newer refusals, nothing counted twice
    small = ViolationAggregator(10, clock=clock, max_keys=1)
    bad_token(small, "own")
    small.due()
    for source in ("a", "b"):
        bad_token(small, source)
    lost = small.due()
    for source in ("b", "c"):
        bad_token(small, source)
    small.restore(lost)
    (merged,) = small.drain()
    assert merged.details()["distinct_sources"] == 3
    assert merged.details()["distinct_sources_capped"] is False


def test_a_failed_write_is_restored_and_merges_with_newer_refusals() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    start = clock.t
    bad_token(agg, path="/a")
    (lost,) = agg.due()
    clock.t = start + 2
    bad_token(agg, path="/b")
    agg.restore([lost])
    assert agg.pending == 2
    assert agg.due() == []  # still within the interval of the failed attempt
    clock.t = start + 10
    (batch,) = agg.due()
    assert batch.count == 2 and batch.first == start and batch.last == start + 2
    assert set(batch.requests) == {"GET /a", "GET /b"}


def test_drain_hands_over_everything_and_details_are_plain_json() -> None:
    clock = Clock()
    agg = ViolationAggregator(10, clock=clock)
    bad_token(agg)
    agg.due()
    clock.t += 3
    bad_token(agg)
    bad_token(agg)
    assert agg.due() == []
    (batch,) = agg.drain()
    assert agg.pending == 0 and agg.drain() == []
    details = json.loads(json.dumps(batch.details()))
    assert details["count"] == 2 and details["source"] == "10.0.0.1"
    assert details["kind"] == "unauthorized" and details["requests"] == ["GET /api/v1/routes"]
    assert details["first"].endswith("Z") and details["first"] == details["last"]
    assert "sources" not in details


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        ViolationAggregator(0)


class Kept:
    """A writer that keeps what it is given; fails while ``broken``."""

    def __init__(self) -> None:
        self.batches: list[ViolationBatch] = []
        self.calls = 0
        self.broken = False

    async def __call__(self, batches: Sequence[ViolationBatch]) -> None:
        self.calls += 1
        if self.broken:
            raise OSError("store away")
        self.batches += batches


async def _until(cond: object, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_recorder_writes_at_once_then_holds_then_flushes_at_close() -> None:
    kept = Kept()
    recorder = ViolationRecorder(ViolationAggregator(3600), kept)
    task = asyncio.ensure_future(recorder.run())
    try:
        bad_token(recorder)
        await _until(lambda: kept.batches)
        for _ in range(999):
            bad_token(recorder)  # never waits: a plain call, no await
        assert recorder.aggregator.pending == 999 and kept.calls == 1
        await recorder.close()
        assert task.done()
    finally:
        task.cancel()
    assert [b.count for b in kept.batches] == [1, 999]


async def test_recorder_keeps_counts_when_the_store_fails() -> None:
    kept = Kept()
    kept.broken = True
    recorder = ViolationRecorder(ViolationAggregator(0.05), kept)
    task = asyncio.ensure_future(recorder.run())
    try:
        bad_token(recorder)
        await _until(lambda: kept.calls >= 2)  # tried, restored, retried an interval later
        kept.broken = False
        bad_token(recorder)
        await _until(lambda: sum(b.count for b in kept.batches) == 2)
        await recorder.close()
    finally:
        task.cancel()
    assert sum(b.count for b in kept.batches) == 2
