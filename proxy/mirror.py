"""Shadow traffic: mirror a copy of requests to a shadow backend, never hurting the client.

For a sampled request the handler gets a :class:`Ticket`. While the primary exchange
streams, the ticket keeps a copy of the request body and of the primary's response body,
each up to the shadow's ``max_body_bytes`` (beyond it the request is not mirrored and is
counted ``skipped``). Once the client's request body is complete, a background task owned
by the :class:`Mirror` sends the copy (``x-splitway-shadow: 1``, same ``x-request-id``),
drains and times the shadow's answer, waits for the primary to finish, and records the
comparison in the route's :class:`ShadowBook`.

Why it cannot hurt the client: the handler only appends to byte buffers and sets events;
it never awaits the shadow. At most ``max_in_flight`` shadow requests exist per route —
beyond that a request is ``dropped`` (counted), never queued — so memory is bounded by
``max_in_flight × 2 × max_body_bytes``. Shadow failures end in the shadow's own counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram
from multidict import CIMultiDict

from proxy.config import Shadow
from proxy.errors import UpstreamError
from proxy.headers import SHADOW_HEADER
from proxy.observe import RouteStats, new_histogram, quantiles_ms
from proxy.shadow_compare import Observed, Verdict, compare
from proxy.stats import paired_latency, wilson_interval
from proxy.upstream import BackendPool

log = logging.getLogger("splitway.mirror")

RECENT_MISMATCHES = 20
PAIRED_WINDOW = 10_000


def sampled(request_id: str, percent: float) -> bool:
    """Deterministic sampling by request id: the same id is always in or always out."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 * 100 < percent


@dataclass(eq=False)
class ShadowBook:
    """What the shadow report says about one route (kept across reloads while the shadow
    backend stays the same)."""

    backend: str
    in_flight: int = 0
    sent: int = 0
    dropped: int = 0
    skipped: int = 0
    errors: int = 0
    compared: int = 0
    matched: int = 0
    primary_latency: HdrHistogram = field(default_factory=new_histogram)
    shadow_latency: HdrHistogram = field(default_factory=new_histogram)
    shadow_ttfb: HdrHistogram = field(default_factory=new_histogram)
    diffs_ms: deque[float] = field(default_factory=lambda: deque(maxlen=PAIRED_WINDOW))
    recent: deque[dict[str, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_MISMATCHES))

    def record(self, verdict: Verdict, request_id: str, primary_s: float,
               shadow_s: float) -> None:
        self.compared += 1
        if verdict.matched:
            self.matched += 1
        else:
            self.recent.appendleft({"request_id": request_id, "detail": verdict.detail})
        self.primary_latency.record_value(max(1, round(primary_s * 1e6)))
        self.shadow_latency.record_value(max(1, round(shadow_s * 1e6)))
        self.diffs_ms.append((shadow_s - primary_s) * 1e3)

    def report(self, route: str) -> dict[str, Any]:
        mismatched = self.compared - self.matched
        paired = paired_latency(list(self.diffs_ms))
        return {
            "route": route, "backend": self.backend, "in_flight": self.in_flight,
            "sent": self.sent, "dropped": self.dropped, "skipped": self.skipped,
            "errors": self.errors, "compared": self.compared, "matched": self.matched,
            "mismatched": mismatched,
            "mismatch_rate": mismatched / self.compared if self.compared else 0.0,
            "mismatch_rate_ci95": list(wilson_interval(mismatched, self.compared)),
            "latency_ms": {"primary": quantiles_ms(self.primary_latency, (50, 95, 99)),
                           "shadow": quantiles_ms(self.shadow_latency, (50, 95, 99))},
            "shadow_ttfb_ms": quantiles_ms(self.shadow_ttfb, (50, 95, 99)),
            "paired_latency_ms": {"n": paired.n, "median_diff": paired.median_diff_ms,
                                  "shadow_slower_fraction": paired.shadow_slower_fraction,
                                  "wilcoxon_p_value": paired.p_value},
            "recent_mismatches": list(self.recent),
        }


@dataclass(frozen=True, slots=True, eq=False)
class ShadowRoute:
    """A route's compiled shadow: its settings, the shadow backend's pool, its book."""

    config: Shadow
    pool: BackendPool
    book: ShadowBook
    stats: RouteStats


class Capture:
    """Bytes kept up to a cap; ``data`` becomes None once the cap is passed (a body too
    large to compare or judge, never held whole)."""

    __slots__ = ("cap", "data")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data: bytearray | None = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self.data is not None:
            if len(self.data) + len(chunk) > self.cap:
                self.data = None
            else:
                self.data += chunk


class Ticket:
    """The handler's side of one mirrored request."""

    __slots__ = ("body", "headers", "method", "path_qs", "primary", "primary_done",
                 "primary_s", "request_done", "request_id", "response", "shadow")

    def __init__(self, shadow: ShadowRoute, method: str, path_qs: str,
                 headers: CIMultiDict[str], request_id: str) -> None:
        self.shadow = shadow
        self.method, self.path_qs, self.request_id = method, path_qs, request_id
        self.headers = CIMultiDict(headers)
        self.headers[SHADOW_HEADER] = "1"
        cap = shadow.config.max_body_bytes
        self.body, self.response = Capture(cap), Capture(cap)
        self.request_done = asyncio.Event()
        self.primary_done = asyncio.Event()
        self.primary: Observed | None = None
        self.primary_s = 0.0

    def end_request(self) -> None:
        self.request_done.set()

    def end_primary(self, status: int | None, duration_s: float, content_type: str) -> None:
        """The primary finished; ``status`` None when it failed without a response."""
        if not self.request_done.is_set():  # body never fully read: nothing to mirror
            self.body.data = None
            self.request_done.set()
        if status is not None:
            data = self.response.data
            self.primary = Observed(status, bytes(data) if data is not None else None,
                                    content_type)
        self.primary_s = duration_s
        self.primary_done.set()


class Mirror:
    """Owns every shadow task of the process; :meth:`close` cancels what is left."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def begin(self, shadow: ShadowRoute, method: str, path_qs: str,
              headers: CIMultiDict[str], request_id: str,
              content_length: int | None) -> Ticket | None:
        cfg, book = shadow.config, shadow.book
        if cfg.methods is not None and method not in cfg.methods:
            return None
        if not sampled(request_id, cfg.percent):
            return None
        if content_length is not None and content_length > cfg.max_body_bytes:
            book.skipped += 1
            return None
        if book.in_flight >= cfg.max_in_flight:
            book.dropped += 1
            shadow.stats.shadow_dropped += 1
            return None
        book.in_flight += 1
        ticket = Ticket(shadow, method, path_qs, headers, request_id)
        task = asyncio.get_running_loop().create_task(self._send(ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ticket

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, t: Ticket) -> None:
        shadow = t.shadow
        book, cfg = shadow.book, shadow.config
        try:
            await t.request_done.wait()
            if t.body.data is None:
                book.skipped += 1
                return
            body = bytes(t.body.data)
            book.sent += 1
            shadow.stats.shadow_sent += 1
            started = self._clock()
            try:
                answer, ttfb_s = await self._exchange(shadow, t, body, started)
            except (UpstreamError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                book.errors += 1
                shadow.stats.shadow_errors += 1
                log.debug("shadow %s failed: %s", shadow.pool.name, exc)
                return
            shadow_s = self._clock() - started
            book.shadow_ttfb.record_value(max(1, round(ttfb_s * 1e6)))
            if answer.status >= 500:
                book.errors += 1
                shadow.stats.shadow_errors += 1
            await t.primary_done.wait()
            if t.primary is None:
                return  # the primary failed: nothing to compare with
            verdict = compare(t.primary, answer, cfg.compare)
            if verdict is None:
                book.skipped += 1
                return
            book.record(verdict, t.request_id, t.primary_s, shadow_s)
            if not verdict.matched:
                shadow.stats.shadow_mismatches += 1
        finally:
            book.in_flight -= 1

    async def _exchange(self, shadow: ShadowRoute, t: Ticket, body: bytes, started: float,
                        ) -> tuple[Observed, float]:
        """Send, drain and capture the shadow's answer; also its time to first byte."""
        timeout = aiohttp.ClientTimeout(total=shadow.config.timeout_s)
        headers = CIMultiDict(t.headers)
        headers.popall("content-length", None)
        async with asyncio.timeout(shadow.config.timeout_s):
            exchange = await shadow.pool.open(t.method, t.path_qs, headers,
                                              body if body or t.method != "GET" else None,
                                              timeout=timeout)
            ttfb_s = self._clock() - started
            clean = False
            try:
                captured = Capture(shadow.config.max_body_bytes)
                async for chunk in exchange.response.content.iter_any():
                    captured.feed(chunk)  # drained to the end, kept up to the cap
                clean = True
                data = captured.data
                return Observed(exchange.response.status,
                                bytes(data) if data is not None else None,
                                exchange.response.headers.get("content-type", "")), ttfb_s
            finally:
                if clean:
                    exchange.response.release()
                else:
                    exchange.response.close()
                BackendPool.done(exchange)
