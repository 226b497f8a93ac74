"""Refused admin API calls, counted in memory and written as few ``security.violation`` events.

A refused call (a wrong token, a role the caller lacks, a write to a read-only API) must
be recorded, but writing one audit event per refusal lets anyone who can reach the port
fill the audit log and slow every operator's write behind the audit lock. So refusals are
counted per :class:`ViolationKey` — source address, kind of refusal, user — and written as
one event per key at most every ``interval_s``:

* a key that was not written in the last interval is due at once (the first bad token of
  an attack is in the log within moments), later refusals of the same key wait until the
  interval since its last event has passed and go out as one event whose
  ``details.count`` is how many there were;
* at most ``max_keys`` keys are live (pending, or written less than an interval ago); the
  refusals of any further key go to an overflow key per kind (source ``*``), so a crowd of
  addresses cannot raise the write rate either. Its event names ``max_samples`` of those
  sources and counts how many distinct ones there were (exactly up to
  :data:`MAX_DISTINCT_SOURCES`; past that ``distinct_sources_capped`` says the count is a
  lower bound, so memory stays bounded too);
* counts are exact: every :meth:`ViolationAggregator.record` ends up in exactly one batch
  (:meth:`~ViolationAggregator.restore` puts back a batch whose write failed, and
  :meth:`~ViolationAggregator.drain` hands over everything at shutdown).

:class:`ViolationAggregator` is pure (no I/O, an injected clock) and O(1) per refusal, so
the 401/403 never waits on the store; :class:`ViolationRecorder` is the thin async loop that
writes what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("splitway.violations")

DEFAULT_INTERVAL_S = 10.0
MAX_KEYS = 100  # live (source, kind, user) keys; more share the overflow key of their kind
MAX_SAMPLES = 10  # distinct "METHOD /path" (and, for overflow, sources) kept per event
MAX_DISTINCT_SOURCES = 10_000  # overflow sources counted exactly per event (then a lower bound)
OVERFLOW_SOURCE = "*"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ViolationKey:
    """What refusals are counted together: source address, kind of refusal, user.

    ``kind`` is the refusal (:class:`control.refusals.Refusal`: ``missing_token``,
    ``bad_token``, ``wrong_role``...); ``actor`` is the token's user, or ``anonymous`` when
    no token matched."""

    source: str
    kind: str
    actor: str


@dataclass(frozen=True, slots=True)
class ViolationBatch:
    """Refusals of one key to be written as one ``security.violation`` event."""

    key: ViolationKey
    count: int
    first: float  # clock time of the first and last refusal counted
    last: float
    requests: tuple[str, ...]  # distinct "METHOD /path", at most MAX_SAMPLES
    requests_truncated: bool  # more distinct requests were seen than kept
    detail: str  # why the first one was refused
    sources: tuple[str, ...] = ()  # the overflow key only: some of the sources it counts
    distinct: frozenset[str] = frozenset()  # ... and all of them (up to the cap)
    distinct_capped: bool = False  # ... and there were more than the cap

    def details(self) -> dict[str, Any]:
        """The event's ``details`` (never a token, nor a token's hash)."""
        out: dict[str, Any] = {
            "source": self.key.source, "kind": self.key.kind, "count": self.count,
            "first": _iso(self.first), "last": _iso(self.last),
            "requests": list(self.requests), "requests_truncated": self.requests_truncated,
            "detail": self.detail,
        }
        if self.key.source == OVERFLOW_SOURCE:
            out["sources"] = list(self.sources)
            out["distinct_sources"] = len(self.distinct)
            out["distinct_sources_capped"] = self.distinct_capped
        return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Pending:
    count: int
    first: float
    last: float
    detail: str
    requests: list[str] = field(default_factory=list)
    truncated: bool = False
    sources: list[str] = field(default_factory=list)
    distinct: set[str] = field(default_factory=set)
    distinct_capped: bool = False

    def count_sources(self, sources: Iterable[str], capped: bool = False) -> None:
        self.distinct_capped = self.distinct_capped or capped
        for source in sources:
            if len(self.distinct) >= MAX_DISTINCT_SOURCES and source not in self.distinct:
                self.distinct_capped = True
                return
            self.distinct.add(source)

    def add(self, count: int, first: float, last: float, requests: Sequence[str],
            truncated: bool, sources: Sequence[str], limit: int) -> None:
        self.count += count
        self.first, self.last = min(self.first, first), max(self.last, last)
        self.truncated = self.truncated or truncated
        for items, new in ((self.requests, requests), (self.sources, sources)):
            for item in new:
                if item in items:
                    continue
                if len(items) < limit:
                    items.append(item)
                elif items is self.requests:
                    self.truncated = True


class ViolationAggregator:
    """Counts refusals per key; hands out at most one batch per key and interval."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Clock = time.time,
                 max_keys: int = MAX_KEYS, max_samples: int = MAX_SAMPLES) -> None:
        if interval_s <= 0 or max_keys < 1 or max_samples < 1:
            raise ValueError("interval_s, max_keys and max_samples must be positive")
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._max_samples = max_samples
        self._pending: dict[ViolationKey, _Pending] = {}
        self._written: dict[ViolationKey, float] = {}  # key -> when its last batch went out

    def now(self) -> float:
        """The aggregator's clock."""
        return self._clock()

    @property
    def pending(self) -> int:
        """Refusals counted and not yet handed out."""
        return sum(p.count for p in self._pending.values())

    def record(self, source: str, kind: str, actor: str, request: str, detail: str) -> bool:
        """Count one refusal; ``True`` when it made a new pending key (worth a wake-up)."""
        now = self._clock()
        key = ViolationKey(source, kind, actor)
        pending = self._pending.get(key)
        if pending is None and key not in self._written:
            self._forget(now)
            if len(self._pending.keys() | self._written.keys()) >= self._max_keys:
                key = ViolationKey(OVERFLOW_SOURCE, kind, OVERFLOW_SOURCE)
                pending = self._pending.get(key)
        new = pending is None
        if pending is None:
            pending = self._pending[key] = _Pending(0, now, now, detail)
        sources = (source,) if key.source == OVERFLOW_SOURCE else ()
        pending.add(1, now, now, (request,), False, sources, self._max_samples)
        pending.count_sources(sources)
        return new

    def _forget(self, now: float) -> None:
        """Drop write times older than an interval: those keys are no longer held back."""
        stale = [k for k, t in self._written.items() if now - t >= self.interval_s]
        for k in stale:
            del self._written[k]

    def _due_at(self, key: ViolationKey) -> float | None:
        last = self._written.get(key)
        return None if last is None else last + self.interval_s

    def next_due(self) -> float | None:
        """Clock time at which the next pending batch may go out (``None``: nothing pending)."""
        times = [self._due_at(k) for k in self._pending]
        if not times:
            return None
        now = self._clock()
        return min(now if t is None else t for t in times)

    def due(self) -> list[ViolationBatch]:
        """Take the batches that may be written now, and count them as written now."""
        now = self._clock()
        out: list[ViolationBatch] = []
        for key in list(self._pending):
            at = self._due_at(key)
            if at is None or at <= now:
                out.append(self._take(key))
                self._written[key] = now
        self._forget(now)
        return out

    def drain(self) -> list[ViolationBatch]:
        """Take every pending batch whatever its interval (shutdown)."""
        return [self._take(key) for key in list(self._pending)]

    def restore(self, batches: Sequence[ViolationBatch]) -> None:
        """Put back batches that could not be written (counts merge with newer ones)."""
        for b in batches:
            pending = self._pending.get(b.key)
            if pending is None:
                pending = self._pending[b.key] = _Pending(
                    b.count, b.first, b.last, b.detail, list(b.requests),
                    b.requests_truncated, list(b.sources))
            else:
                pending.add(b.count, b.first, b.last, b.requests, b.requests_truncated,
                            b.sources, self._max_samples)
                pending.detail = b.detail
            pending.count_sources(b.distinct, b.distinct_capped)

    def _take(self, key: ViolationKey) -> ViolationBatch:
        p = self._pending.pop(key)
        return ViolationBatch(key, p.count, p.first, p.last, tuple(p.requests), p.truncated,
                              p.detail, tuple(p.sources), frozenset(p.distinct),
                              p.distinct_capped)


Writer = Callable[[Sequence[ViolationBatch]], Awaitable[None]]


class ViolationRecorder:
    """The async shell: :meth:`record` never waits; :meth:`run` writes what is due.

    ``write`` appends the events (one transaction for a set of batches); when it raises,
    the batches are put back and retried after their interval. :meth:`close` stops the
    loop and writes everything still pending."""

    def __init__(self, aggregator: ViolationAggregator, write: Writer) -> None:
        self.aggregator = aggregator
        self._write = write
        self._wake = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()  # nothing running yet

    def record(self, source: str, kind: str, actor: str, request: str, detail: str) -> None:
        if self.aggregator.record(source, kind, actor, request, detail):
            self._wake.set()

    async def run(self) -> None:
        """Write due batches until :meth:`close`; owned by the admin app."""
        self._idle.clear()
        try:
            while not self._stopping:
                at = self.aggregator.next_due()
                delay = None if at is None else max(0.0, at - self.aggregator.now())
                if delay is None or delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    self._wake.clear()
                    continue
                await self._flush(self.aggregator.due())
        finally:
            self._idle.set()

    async def _flush(self, batches: Sequence[ViolationBatch]) -> None:
        if not batches:
            return
        try:
            await self._write(batches)
        except Exception:  # the store may be away: keep the counts, retry after the interval
            log.warning("could not write %d security.violation events; kept for a retry",
                        len(batches), exc_info=True)
            self.aggregator.restore(batches)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop (letting a write in progress finish), then write what is pending."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        batches = self.aggregator.drain()
        if not batches:
            return
        try:
            await self._write(batches)
        except Exception:
            log.error("could not write %d pending security.violation events (%d refusals) "
                      "at shutdown", len(batches), sum(b.count for b in batches),
                      exc_info=True)
