"""The request path: match -> choose variant -> forward, streaming both ways -> observe.

Everything here either looks something up in the current :class:`~proxy.runtime.Runtime`
or moves bytes; decisions live in :mod:`proxy.routing`, :mod:`proxy.splitter` and
:mod:`proxy.outlier`. Errors raised on the way are :mod:`proxy.errors` types, turned into
the JSON error shape in exactly one place (:func:`error_response`).

A client that goes away cancels this handler (the server runs with handler
cancellation); the ``finally`` blocks close the upstream response, so the backend sees the
disconnect too. Such requests are counted with status 499, nginx's "client closed".
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import aiohttp
from aiohttp import web

from proxy.errors import (
    BadPinError,
    BodyTooLargeError,
    NoRouteError,
    SplitwayError,
    UpstreamError,
    error_body,
    status_of,
)
from proxy.experiment.service import ExperimentService
from proxy.headers import (
    REQUEST_ID_HEADER,
    VARIANT_HEADER,
    downstream_response_headers,
    upstream_request_headers,
)
from proxy.mirror import Capture, Mirror, Ticket
from proxy.observe import VariantStats
from proxy.runtime import RouteRuntime, Runtime
from proxy.shadow_compare import json_number
from proxy.upstream import BackendPool, Exchange, translate

CLIENT_CLOSED = 499
CHUNK = 1 << 16
SMALL_BODY = 1 << 16  # bodies up to this size (with a Content-Length) are read whole
EXPERIMENT_BODY_CAP = 1 << 20  # a JSON success field is looked for in the first MiB


class RuntimeHolder(Protocol):
    @property
    def current(self) -> Runtime: ...

    @property
    def mirror(self) -> Mirror: ...

    @property
    def experiments(self) -> ExperimentService: ...


def error_response(
    exc: BaseException, request_id: str, route: str | None = None, variant: str | None = None
) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id}
    if variant is not None:
        headers[VARIANT_HEADER] = variant
    return web.json_response(
        error_body(exc, request_id=request_id, route=route, variant=variant),
        status=status_of(exc),
        headers=headers,
    )


class How(Enum):
    PIN = "pin"
    HASH = "hash"
    RANDOM = "random"
    FALLBACK = "fallback"  # a hash split whose request lacked the key


@dataclass(frozen=True, slots=True)
class Choice:
    variant: str
    how: How
    key: str | None = None


def choose_variant(rr: RouteRuntime, request: web.Request, rng: random.Random) -> Choice:
    """Pin, sticky hash, or weighted random (contract §3)."""
    split = rr.config.split
    if split.allow_pin:
        pinned = request.headers.get(VARIANT_HEADER)
        if pinned is not None:
            if pinned not in rr.config.variants:
                raise BadPinError(f"{VARIANT_HEADER}: {pinned!r} is not a variant of this route")
            return Choice(pinned, How.PIN)
    if rr.hash_source is not None:
        kind, name = rr.hash_source
        key: str | None
        if kind == "header":
            key = request.headers.get(name)
        elif kind == "cookie":
            key = request.cookies.get(name)
        elif kind == "query":
            key = request.query.get(name)
        else:
            key = request.remote
        if key:
            return Choice(rr.table.pick_hash(key), How.HASH, key)
        rr.stats.record_fallback()
        return Choice(rr.table.pick_random(rng.random()), How.FALLBACK)
    return Choice(rr.table.pick_random(rng.random()), How.RANDOM)


class _LimitedBody:
    """Streams the client's body upstream, stopping at the route's size limit."""

    __slots__ = ("_content", "_limit", "ticket", "too_large")

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.too_large = False
        self.ticket: Ticket | None = None  # a shadow copy is taken as the body streams

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self._content.iter_chunked(CHUNK):
            total += len(chunk)
            if total > self._limit:
                self.too_large = True
                # Raising aborts the upstream request instead of ending it cleanly, so the
                # backend never takes a truncated body for a whole one.
                raise BodyTooLargeError(f"request body over {self._limit} bytes")
            if self.ticket is not None:
                self.ticket.body.feed(chunk)
            yield chunk
        if self.ticket is not None:
            self.ticket.end_request()


class ProxyHandler:
    """The data plane's only aiohttp handler."""

    def __init__(
        self,
        holder: RuntimeHolder,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._holder = holder
        self._rng = rng or random.Random()
        self._clock = clock

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        rt = self._holder.current
        rt.enter()
        request_id = request.headers.get(REQUEST_ID_HEADER) or os.urandom(16).hex()
        try:
            matched = rt.router.match(request.method, request.host, request.path,
                                      request.headers)
            if matched is None:
                raise NoRouteError(f"no route matches {request.method} {request.path}")
            rr = rt.routes[matched.name]
            try:
                choice = choose_variant(rr, request, self._rng)
            except SplitwayError as exc:
                return error_response(exc, request_id, rr.config.name)
            return await self._forward(request, rr, choice, request_id)
        except SplitwayError as exc:
            return error_response(exc, request_id)
        finally:
            rt.leave()

    async def _forward(
        self, request: web.Request, rr: RouteRuntime, choice: Choice, request_id: str
    ) -> web.StreamResponse:
        route, variant = rr.config.name, choice.variant
        stats = rr.stats.variant(variant)
        pool: BackendPool = rr.pools[variant]
        started = self._clock()
        status = CLIENT_CLOSED
        ttfb: float | None = None
        aborted = False
        ticket: Ticket | None = None
        answered: aiohttp.ClientResponse | None = None
        rule = rr.success if choice.how is not How.PIN else None  # pins are not randomised
        verdict_body = Capture(EXPERIMENT_BODY_CAP) if rule and rule.needs_body else None
        field_path = rr.json_field  # a rollout's json_metric check is reading this field
        field_body = Capture(EXPERIMENT_BODY_CAP) if field_path else None
        rr.stats.enter()
        try:
            limit = rr.config.max_body_bytes
            if request.content_length is not None and request.content_length > limit:
                status = BodyTooLargeError.status
                return error_response(
                    BodyTooLargeError(f"request body of {request.content_length} bytes is over "
                                      f"the limit of {limit}"), request_id, route, variant)
            # A small body of known length is read whole: cheaper than streaming it through
            # two generators, and a refused connection can then always be retried.
            small: bytes | None = None
            body: _LimitedBody | None = None
            if request.body_exists:
                if request.content_length is not None and request.content_length <= SMALL_BODY:
                    small = await request.read()
                else:
                    body = _LimitedBody(request.content, limit)
            headers = upstream_request_headers(
                request.headers, client_ip=request.remote, scheme=request.scheme,
                request_id=request_id,
            )
            if rr.shadow is not None:
                ticket = self._holder.mirror.begin(rr.shadow, request.method, request.raw_path,
                                                   headers, request_id, request.content_length)
                if ticket is not None:
                    if body is None:
                        if small:
                            ticket.body.feed(small)
                        ticket.end_request()
                    else:
                        body.ticket = ticket
            try:
                exchange = await pool.open(request.method, request.raw_path, headers,
                                           body.__aiter__() if body else small)
            except UpstreamError as exc:
                if body is not None and body.too_large:
                    status = BodyTooLargeError.status
                    return error_response(BodyTooLargeError(f"request body over {limit} bytes"),
                                          request_id, route, variant)
                stats.record_upstream_error(exc.reason)
                status = exc.status
                return error_response(exc, request_id, route, variant)
            ttfb = self._clock() - started
            sinks = tuple(c for c in (ticket.response if ticket else None, verdict_body,
                                      field_body) if c)
            status, response, aborted = await self._relay(
                request, exchange, route, variant, request_id, stats, body, sinks)
            if not aborted and status == exchange.response.status:
                answered = exchange.response
            return response
        finally:
            rr.stats.leave()
            duration = self._clock() - started
            stats.record(status, duration, ttfb, aborted=aborted)
            if ticket is not None:
                ticket.end_primary(answered.status if answered else None, duration,
                                   answered.headers.get("content-type", "") if answered else "")
            if field_path and field_body is not None and field_body.data and answered:
                value = json_number(field_body.data, field_path)
                if value is not None:
                    stats.record_field(value)
            if rule is not None and status != CLIENT_CLOSED:
                ok = answered is not None and rule.judge(
                    status, answered.headers, verdict_body.data if verdict_body else None)
                self._holder.experiments.record(
                    rr, variant, success=ok, duration_s=duration, request_id=request_id,
                    unit=choice.key, fallback=choice.how is How.FALLBACK)

    async def _relay(
        self,
        request: web.Request,
        exchange: Exchange,
        route: str,
        variant: str,
        request_id: str,
        stats: VariantStats,
        body: _LimitedBody | None,
        sinks: tuple[Capture, ...],
    ) -> tuple[int, web.StreamResponse, bool]:
        """Stream the upstream response to the client; returns (status, response, aborted)
        where ``aborted`` means the response was cut after its headers were sent."""
        upstream = exchange.response
        clean = False
        try:
            out = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=downstream_response_headers(
                    upstream.headers, variant=variant, request_id=request_id
                ),
            )
            if upstream.content_length is not None and "chunked" not in upstream.headers.get(
                "transfer-encoding", ""
            ).lower():
                out.content_length = upstream.content_length
            try:
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    for sink in sinks:  # shadow comparison, experiment success rule
                        sink.feed(chunk)
                    await out.write(chunk)
                await out.write_eof()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error: SplitwayError
                if body is not None and body.too_large:
                    error = BodyTooLargeError("request body over the route's limit")
                else:
                    error = translate(exc, exchange.endpoint.url)
                    stats.record_upstream_error(error.reason)
                if not out.prepared:
                    return error.status, error_response(error, request_id, route, variant), False
                # Headers are gone: the only honest signal left is a cut connection.
                if request.transport is not None:
                    request.transport.close()
                return upstream.status, out, True
            except ConnectionResetError:
                return CLIENT_CLOSED, out, False  # the client went away mid-response
            clean = True
            return upstream.status, out, False
        finally:
            if clean:
                upstream.release()
            else:
                upstream.close()
            BackendPool.done(exchange)
