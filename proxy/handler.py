"""The request path: normalize the target -> match -> choose variant -> forward, streaming
both ways -> observe.

Everything here either looks something up in the current :class:`~proxy.runtime.Runtime`
or moves bytes; decisions live in :mod:`proxy.target`, :mod:`proxy.routing`,
:mod:`proxy.choice` (with :mod:`proxy.splitter` and :mod:`proxy.pins`), :mod:`proxy.body`
and :mod:`proxy.outlier`. Errors raised on the
way are :mod:`proxy.errors` types, turned into the JSON error shape in exactly one place
(:func:`error_response`).

The target the router matches is the very string sent upstream
(:func:`proxy.target.normalize_target`); aiohttp's decoded ``request.path`` is never used.

Every outcome is recorded with its :class:`~proxy.errors.Cause`: only the backend's own
(an answer, or a connect/reset/timeout failure) from a fairly chosen request (not an
untrusted pin) reaches the rollout judge and experiments.

A request body is read under ``limits.body_read_timeout_s`` (:mod:`proxy.body`): a body
that stalls is answered 408 and the connection closed, freeing the route's concurrency
slot, whether it is read whole first (small, with a Content-Length) or streamed.

A client that goes away cancels this handler (the server runs with handler
cancellation); the ``finally`` blocks close the upstream response, so the backend sees the
disconnect too. Such requests are counted with status 499, nginx's "client closed".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web

from proxy.body import LimitedBody, read_small
from proxy.choice import Choice, How, choose_variant
from proxy.errors import (
    BodyTooLargeError,
    Cause,
    ClientTimeoutError,
    NoRouteError,
    OverloadedError,
    ProxyError,
    SplitwayError,
    UpstreamError,
    error_body,
    headers_of,
    status_of,
)
from proxy.experiment.service import ExperimentService
from proxy.headers import (
    REQUEST_ID_HEADER,
    VARIANT_HEADER,
    downstream_response_headers,
    request_id_of,
    upstream_request_headers,
)
from proxy.mirror import Capture, Mirror, Ticket
from proxy.observe import VariantStats
from proxy.runtime import RouteRuntime, Runtime
from proxy.shadow_compare import json_number
from proxy.target import Target, normalize_target
from proxy.upstream import BackendPool, Exchange, translate

CLIENT_CLOSED = 499
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
    headers = {REQUEST_ID_HEADER: request_id, **headers_of(exc)}
    if variant is not None:
        headers[VARIANT_HEADER] = variant
    response = web.json_response(
        error_body(exc, request_id=request_id, route=route, variant=variant),
        status=status_of(exc),
        headers=headers,
    )
    if isinstance(exc, ClientTimeoutError):
        # The rest of a stalled body may still come: this connection cannot carry another
        # request (RFC 9110 §15.5.9: a 408 closes it).
        response.force_close()
    return response


@dataclass(frozen=True, slots=True)
class _Relayed:
    status: int
    response: web.StreamResponse
    aborted: bool  # the response was cut after its headers were sent
    cause: Cause


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
        request_id = request_id_of(request.headers)
        try:
            target = normalize_target(request.method, request.raw_path)
            # RFC 9112 §3.2.2: an absolute-form target's authority stands for Host.
            host = target.authority if target.authority is not None else request.host
            matched = rt.router.match(request.method, host, target.path, request.headers)
            if matched is None:
                raise NoRouteError(f"no route matches {request.method} {target.path}")
            rr = rt.routes[matched.name]
            limit = rr.config.max_concurrency
            if limit is not None and rr.stats.in_flight >= limit:
                # Refused at once, never queued, and before a variant is chosen: an
                # overload is nobody's variant's fault.
                rr.stats.record_overload()
                return error_response(OverloadedError(
                    f"route {rr.config.name!r} has {limit} requests in flight"),
                    request_id, rr.config.name)
            try:
                choice = choose_variant(rr, request, self._rng)
            except SplitwayError as exc:
                return error_response(exc, request_id, rr.config.name)
            return await self._forward(request, target, rr, choice, request_id,
                                       rt.settings.limits.body_read_timeout_s)
        except SplitwayError as exc:
            return error_response(exc, request_id)
        finally:
            rt.leave()

    async def _forward(
        self, request: web.Request, target: Target, rr: RouteRuntime, choice: Choice,
        request_id: str, body_timeout_s: float,
    ) -> web.StreamResponse:
        route, variant = rr.config.name, choice.variant
        stats = rr.stats.variant(variant)
        pool: BackendPool = rr.pools[variant]
        started = self._clock()
        # Until an answer or a backend failure says otherwise: a cancelled handler is a
        # client that went away.
        status, cause = CLIENT_CLOSED, Cause.CLIENT
        ttfb: float | None = None
        aborted = False
        ticket: Ticket | None = None
        answered: aiohttp.ClientResponse | None = None
        rule = rr.success if not choice.how.pinned else None  # pins are not randomised
        verdict_body = Capture(EXPERIMENT_BODY_CAP) if rule and rule.needs_body else None
        field_path = rr.json_field  # a rollout's json_metric check is reading this field
        field_body = Capture(EXPERIMENT_BODY_CAP) if field_path and choice.judged else None
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
            body: LimitedBody | None = None
            if request.body_exists:
                if request.content_length is not None and request.content_length <= SMALL_BODY:
                    try:
                        # No upstream timeout runs yet: without this one a stalled body
                        # would hold the connection and a concurrency slot for good.
                        small = await read_small(request.content, body_timeout_s)
                    except ProxyError as exc:
                        status = exc.status
                        return error_response(exc, request_id, route, variant)
                else:
                    body = LimitedBody(request.content, limit, body_timeout_s)
            headers = upstream_request_headers(
                request.headers, client_ip=request.remote, scheme=request.scheme,
                request_id=request_id, host=target.authority, internal=rr.internal_headers,
            )
            if rr.shadow is not None:
                ticket = self._holder.mirror.begin(rr.shadow, request.method, target.path_qs,
                                                   headers, request_id, request.content_length)
                if ticket is not None:
                    if body is None:
                        if small:
                            ticket.body.feed(small)
                        ticket.end_request()
                    else:
                        body.ticket = ticket
            try:
                exchange = await pool.open(request.method, target.path_qs, headers,
                                           body.__aiter__() if body else small)
            except UpstreamError as exc:
                own = body.owns(exc) if body is not None else None
                if own is not None:
                    status = own.status
                    return error_response(own, request_id, route, variant)
                stats.record_upstream_error(exc.reason)
                pool.warn(exc, request_id)
                status, cause = exc.status, Cause.BACKEND
                return error_response(exc, request_id, route, variant)
            except ProxyError as exc:  # raised by the body's source: the client's doing
                status, cause = exc.status, exc.cause
                return error_response(exc, request_id, route, variant)
            ttfb = self._clock() - started
            sinks = tuple(c for c in (ticket.response if ticket else None, verdict_body,
                                      field_body) if c)
            relayed = await self._relay(request, exchange, pool, variant, route, request_id,
                                        stats, body, sinks)
            status, cause, aborted = relayed.status, relayed.cause, relayed.aborted
            if not aborted and status == exchange.response.status:
                answered = exchange.response
            return relayed.response
        finally:
            rr.stats.leave()
            duration = self._clock() - started
            stats.record(status, duration, ttfb, cause=cause, judged=choice.judged,
                         aborted=aborted)
            if ticket is not None:
                ticket.end_primary(answered.status if answered else None, duration,
                                   answered.headers.get("content-type", "") if answered else "")
            if field_path and field_body is not None and field_body.data and answered:
                value = json_number(field_body.data, field_path)
                if value is not None:
                    stats.record_field(value)
            if rule is not None and cause is Cause.BACKEND:
                ok = answered is not None and rule.judge(
                    status, answered.headers, verdict_body.data if verdict_body else None)
                self._holder.experiments.record(
                    rr, variant, success=ok, duration_s=duration, request_id=request_id,
                    unit=choice.key, fallback=choice.how is How.FALLBACK)

    async def _relay(
        self,
        request: web.Request,
        exchange: Exchange,
        pool: BackendPool,
        variant: str,
        route: str,
        request_id: str,
        stats: VariantStats,
        body: LimitedBody | None,
        sinks: tuple[Capture, ...],
    ) -> _Relayed:
        """Stream the upstream response to the client."""
        upstream = exchange.response
        clean = False
        writing = False  # a failure while writing to the client is the client's
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
                writing = True
                await out.prepare(request)
                writing = False
                async for chunk in upstream.content.iter_any():
                    for sink in sinks:  # shadow comparison, experiment success rule
                        sink.feed(chunk)
                    writing = True
                    await out.write(chunk)
                    writing = False
                writing = True
                await out.write_eof()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if writing:  # the client went away mid-response
                    return _Relayed(CLIENT_CLOSED, out, False, Cause.CLIENT)
                failed = translate(exc, pool.name, exchange.endpoint.url)
                own = body.owns(failed) if body is not None else None
                error: ProxyError = own if own is not None else failed
                if own is None:
                    stats.record_upstream_error(failed.reason)
                    pool.warn(failed, request_id)
                if not out.prepared:
                    return _Relayed(error.status,
                                    error_response(error, request_id, route, variant), False,
                                    error.cause)
                # Headers are gone: the only honest signal left is a cut connection.
                if request.transport is not None:
                    request.transport.close()
                return _Relayed(upstream.status, out, True, error.cause)
            clean = True
            return _Relayed(upstream.status, out, False, Cause.BACKEND)
        finally:
            if clean:
                upstream.release()
            else:
                upstream.close()
            BackendPool.done(exchange)
