"""Upstream I/O: one keep-alive client pool per backend, endpoint choice, ejection, retry.

A :class:`BackendPool` owns one :class:`aiohttp.ClientSession` (its connector is the
keep-alive pool, capped at ``max_connections``) and the endpoints' health state. Its
:meth:`BackendPool.open` sends a request and returns the response with headers read and
the body still unread, so the caller streams it.

A connect failure happens before any byte of the request is sent, so it is retried on
another endpoint of the same backend (contract §4); nothing else is retried, because a
model request is not known to be idempotent. aiohttp's exceptions are translated here into
:mod:`proxy.errors`' upstream errors, each carrying the metric ``reason``; their ``detail``
(what the client reads) names the backend only, the endpoint URL and the OS error go to
``internal``, which :meth:`BackendPool.warn` writes to the log.

The request target is sent exactly as given: the URL is built with ``encoded=True``, so
neither yarl nor aiohttp re-quotes it or resolves its dot-segments (they would otherwise
turn ``/rec/%2e%2e/admin`` into ``/admin`` after the router had matched ``/rec``). The
target must come from :func:`proxy.target.normalize_target`.

A failure raised by the request body's own source (the client closed, sent too much or a
malformed body) is not the backend's: :meth:`BackendPool.open` re-raises that error as it
is instead of translating it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy import outlier
from proxy.config import Backend
from proxy.errors import (
    Cause,
    ProxyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from proxy.outlier import Endpoint

log = logging.getLogger("splitway.upstream")

Clock = Callable[[], float]
WARN_INTERVAL_S = 1.0  # at most one failure line per endpoint and second (plus a count)


def translate(exc: BaseException, backend: str, endpoint: str = "") -> UpstreamError:
    """Map an aiohttp/OS error to splitway's upstream error (one place for it).

    The client-facing detail names ``backend`` only; ``endpoint`` and the exception go to
    the error's ``internal`` text, for the log."""
    internal = f"{endpoint}: {type(exc).__name__}: {exc}" if endpoint else repr(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeoutError(f"connecting to {backend} timed out", internal)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"{backend} did not answer in time", internal)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # os.strerror(errno), never the exception's own text: uvloop's names the address
        errno = exc.os_error.errno
        why = os.strerror(errno) if errno else type(exc.os_error).__name__
        return UpstreamConnectError(f"cannot connect to {backend}: {why}", internal)
    return UpstreamResetError(f"{backend} closed the connection", internal)


def body_failure(exc: BaseException) -> ProxyError | None:
    """The client-caused error a request body's source raised, if that is what made the
    upstream request fail (aiohttp wraps it: ``ClientConnectionError`` from it)."""
    seen: BaseException | None = exc
    for _ in range(5):  # the chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, ProxyError) and seen.cause is not Cause.BACKEND:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _OnceBody:
    """Wraps a streamed request body; records whether the upstream started reading it.

    A retry is only safe while nothing was consumed."""

    __slots__ = ("_source", "started")

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self._source:
            yield chunk


@dataclass(frozen=True, slots=True)
class Exchange:
    """An upstream response whose body is still to be read, and where it came from."""

    response: aiohttp.ClientResponse
    endpoint: Endpoint


class BackendPool:
    """The client side of one backend: session, endpoints, balancing and ejection."""

    def __init__(
        self,
        name: str,
        config: Backend,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.endpoints = [Endpoint(url) for url in config.endpoints]
        self._clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=config.timeout_s, sock_connect=config.connect_timeout_s
        )
        self._warned: dict[str, tuple[float, int]] = {}  # endpoint -> (last line, suppressed)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, keepalive_timeout=30, ttl_dns_cache=60
            )
            # auto_decompress=False: bytes pass through exactly as the backend sent them.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _failed(self, ep: Endpoint) -> None:
        if outlier.record_failure(ep, self.endpoints, self._clock(),
                                  self.config.outlier_detection):
            log.warning("backend %s: endpoint %s ejected (%d times)",
                        self.name, ep.url, ep.times_ejected)

    def warn(self, error: UpstreamError, request_id: str) -> None:
        """Log a failure the client was answered with: one line with what the response
        body leaves out (endpoint, OS error), at most one per endpoint and second."""
        endpoint = error.internal.partition(": ")[0]
        now = self._clock()
        last, suppressed = self._warned.get(endpoint, (float("-inf"), 0))
        if now - last < WARN_INTERVAL_S:
            self._warned[endpoint] = (last, suppressed + 1)
            return
        self._warned[endpoint] = (now, 0)
        log.warning("backend %s: %s (%s) request_id=%s%s", self.name, error.detail,
                    error.internal, request_id,
                    f" [{suppressed} more since the last line]" if suppressed else "")

    def observe_status(self, ep: Endpoint, status: int) -> None:
        """Feed a response status to passive outlier detection."""
        if status >= 500:
            self._failed(ep)
        else:
            outlier.record_success(ep)

    async def open(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Exchange:
        """Send the request; return once response headers arrived (body unread).

        ``path_qs`` is a normalized target (:func:`proxy.target.normalize_target`), sent
        byte for byte. The caller must ``release()`` or close the response and then call
        :meth:`done` with the endpoint."""
        data: Any = _OnceBody(body) if body is not None and not isinstance(body, bytes) else body
        tried: Endpoint | None = None
        attempts = min(len(self.endpoints), 3)
        for attempt in range(attempts):
            ep = outlier.choose(self.endpoints, self._clock(), self._rng, exclude=tried)
            ep.outstanding += 1
            try:
                response = await self.session.request(
                    method, URL(ep.url + path_qs, encoded=True), headers=headers, data=data,
                    allow_redirects=False, timeout=timeout or self._timeout,
                    compress=None, auto_decompress=False,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                ep.outstanding -= 1
                own = body_failure(exc)
                if own is not None:
                    raise own from None  # the client's doing: not the endpoint's
                error = translate(exc, self.name, ep.url)
                if isinstance(error, UpstreamConnectError | UpstreamTimeoutError) and (
                    isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
                ):
                    self._failed(ep)
                    retryable = not (isinstance(data, _OnceBody) and data.started)
                    if retryable and attempt + 1 < attempts:
                        tried = ep
                        continue
                raise error from exc
            except BaseException:
                ep.outstanding -= 1
                raise
            self.observe_status(ep, response.status)
            return Exchange(response, ep)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def done(exchange: Exchange) -> None:
        exchange.endpoint.outstanding -= 1

    async def probe(self, ep: Endpoint) -> bool:
        """One active health check of one endpoint."""
        hc = self.config.health_check
        assert hc is not None
        try:
            async with self.session.get(
                ep.url + hc.path, timeout=aiohttp.ClientTimeout(total=hc.timeout_s)
            ) as resp:
                await resp.read()
                return resp.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def health_loop(self) -> None:
        """Run active health checks forever (cancelled by the owner on shutdown)."""
        hc = self.config.health_check
        if hc is None:
            return
        streaks = {id(ep): 0 for ep in self.endpoints}
        while True:
            results = await asyncio.gather(*(self.probe(ep) for ep in self.endpoints))
            for ep, ok in zip(self.endpoints, results, strict=True):
                # streak > 0 counts successes, < 0 failures; flip on the threshold.
                s = streaks[id(ep)]
                s = max(s, 0) + 1 if ok else min(s, 0) - 1
                streaks[id(ep)] = s
                if ok and not ep.healthy and s >= hc.healthy_threshold:
                    ep.healthy = True
                    log.info("backend %s: endpoint %s healthy", self.name, ep.url)
                elif not ok and ep.healthy and -s >= hc.unhealthy_threshold:
                    ep.healthy = False
                    log.warning("backend %s: endpoint %s failed health checks",
                                self.name, ep.url)
            await asyncio.sleep(hc.interval_s)
