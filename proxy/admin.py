"""The admin app: one middleware and the route table of every admin API operation.

Routes come from :data:`proxy.admin_routes.ROUTES` (health, metrics, routes, weights,
reload) and from the control plane's modules listed in :data:`ROUTE_MODULES`; each is an
:class:`~control.api.ApiRoute` that names its role and body limit. The middleware
authenticates against the tokens the proxy state holds (swapped whole on reload),
authorizes, counts every refused call — under the :class:`~control.refusals.Refusal` it is
(no token, a token in the query string, a malformed header, a bad token, a missing role, a
read-only or closed API) — for the aggregated ``security.violation`` events
(:mod:`control.violations`; the refusal never waits on the store), refuses a body over the
operation's ``max_body`` from its Content-Length before anything is read, and turns every
:class:`~proxy.errors.SplitwayError` — and aiohttp's own 404/405 — into the JSON error
shape (a 408 for a stalled body also closes the connection). Bodies are read within
``limits.body_read_timeout_s`` (:func:`control.api.body_chunks`). :mod:`control.api.openapi`
describes the same table.

On a listener that is not loopback and without ``admin.tokens_file``, every ``/api/v1``
operation is refused (403) and a warning is logged at start-up; the public operations
(``/healthz``, ``/readyz``, ``/metrics``, ``/api/openapi.json``) stay open.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CollectorRegistry

from control.api import (
    BODY_READ_TIMEOUT,
    DEFAULT_MAX_BODY,
    PRINCIPAL,
    SPECS,
    ApiRoute,
    Handler,
    actor_of,
    too_large,
)
from control.auth import TokenTable, authorize, is_loopback, parse_bearer
from control.refusals import UNAUTHORIZED_DETAIL, refusal_of
from control.violations import ViolationAggregator, ViolationBatch, ViolationRecorder, Writer
from proxy.app import STATE, ProxyState
from proxy.config import parse_listen
from proxy.errors import (
    ApiError,
    BodyTooLargeError,
    ClientTimeoutError,
    NotFoundError,
    SplitwayError,
    UnauthorizedError,
    error_body,
    headers_of,
    status_of,
)
from proxy.headers import REQUEST_ID_HEADER
from proxy.metrics import build_registry

log = logging.getLogger("splitway.admin")

#: Modules whose ``ROUTES`` make up the admin API, in registration order.
ROUTE_MODULES: tuple[str, ...] = (
    "proxy.admin_routes",
    "proxy.rollout.api",
    "proxy.experiment.api",
    "control.api.registry",
    "control.api.promotions",
    "control.api.audit",
    "control.api.openapi",
)

METRICS = web.AppKey("metrics", CollectorRegistry)
ALL_ROUTES = web.AppKey("all_routes", tuple[ApiRoute, ...])
VIOLATIONS = web.AppKey("violations", ViolationRecorder)
#: the listener is not loopback (decided from ``admin.listen`` at start-up)
EXPOSED = web.AppKey("exposed", bool)


def all_routes() -> tuple[ApiRoute, ...]:
    routes: list[ApiRoute] = []
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).ROUTES)
    return tuple(routes)


def _json_error(exc: BaseException, request_id: str) -> web.Response:
    response = web.json_response(error_body(exc, request_id=request_id), status=status_of(exc),
                                 headers={REQUEST_ID_HEADER: request_id, **headers_of(exc)})
    if isinstance(exc, ClientTimeoutError):
        response.force_close()  # the rest of a stalled body must not be read as a request
    return response


def _authenticate(request: web.Request, spec: ApiRoute | None) -> None:
    tokens = request.app[STATE].tokens  # read once: a reload swaps the whole table
    header = request.headers.get("Authorization")
    token = parse_bearer(header)
    principal = tokens.authenticate(token) if tokens is not None and token else None
    if principal is not None:
        request[PRINCIPAL] = principal
    if spec is None or (spec.role is None and not spec.any_user):
        return  # public
    try:
        authorize(principal, spec.role, tokens_configured=tokens is not None,
                  write=request.method not in ("GET", "HEAD", "OPTIONS"),
                  exposed=request.app[EXPOSED])
    except ApiError as exc:
        # Every refusal is counted (the aggregator bounds the writes, not the counting).
        kind = refusal_of(exc, tokens_configured=tokens is not None, authorization=header,
                          query=request.query.keys())
        if isinstance(exc, UnauthorizedError):
            exc = UnauthorizedError(UNAUTHORIZED_DETAIL[kind])
        request.app[VIOLATIONS].record(
            request.remote or "unknown", str(kind), actor_of(request),
            f"{request.method} {request.path}"[:200], exc.detail)
        raise exc from None


def _check_body_size(request: web.Request, spec: ApiRoute | None) -> None:
    """Refuse a body announced over the operation's limit before any of it is read;
    :func:`control.api.read_body` enforces the same limit on chunked bodies."""
    if spec is None:
        return  # aiohttp answers 404/405; the body is never read
    limit = spec.max_body
    size = request.content_length
    if size is not None and size > limit:
        raise BodyTooLargeError(too_large(size, limit))


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    try:
        spec = request.app[SPECS].get(request.match_info.route)
        _authenticate(request, spec)
        _check_body_size(request, spec)
        return await handler(request)
    except SplitwayError as exc:
        return _json_error(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _json_error(NotFoundError(f"no such path {request.path}"), request_id)
        error = ApiError(exc.reason)
        error.status = exc.status
        response = _json_error(error, request_id)
        if "Allow" in exc.headers:  # a 405 says which methods the path takes (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response


async def _violations_loop(app: web.Application) -> AsyncIterator[None]:
    recorder = app[VIOLATIONS]
    app[STATE].own(recorder.run(), "security-violations")
    yield
    await recorder.close()  # writes what is still counted, before the store closes


def _violation_writer(state: ProxyState) -> Writer:
    async def write(batches: Sequence[ViolationBatch]) -> None:
        if state.store is None or state.audit is None:
            return
        async with state.store.transaction() as tx:
            for b in batches:
                paths = {r.partition(" ")[2] for r in b.requests}
                resource = f"api:{paths.pop()}" if len(paths) == 1 else "api:*"
                await state.audit.append(tx, "security.violation", b.key.actor, resource,
                                         b.details(), severity="warning")
    return write


def create_admin_app(state: ProxyState, tokens: TokenTable | None,
                     routes: Iterable[ApiRoute] | None = None) -> web.Application:
    """The admin app over ``state``; ``tokens`` become ``state.tokens`` (``None``: no tokens
    file), which :meth:`ProxyState.reload` replaces."""
    # Bodies are read through control.api.read_body (per-operation limit) or streamed;
    # this only bounds a handler that would call request.read() itself.
    app = web.Application(middlewares=[api_middleware], client_max_size=DEFAULT_MAX_BODY)
    app[STATE] = state
    app[BODY_READ_TIMEOUT] = lambda: state.settings.limits.body_read_timeout_s
    state.tokens = tokens
    listen = state.settings.admin.listen
    app[EXPOSED] = not is_loopback(parse_listen(listen).host)
    if app[EXPOSED] and tokens is None:
        log.warning("admin API on %s is not loopback and has no admin.tokens_file: /api/v1 is "
                    "refused (403); /healthz, /readyz, /metrics stay open", listen)
    app[VIOLATIONS] = ViolationRecorder(
        ViolationAggregator(state.settings.admin.violation_interval_s),
        _violation_writer(state))
    app.cleanup_ctx.append(_violations_loop)
    app[METRICS] = build_registry(
        state.observatory, weights_provider=lambda: state.current.live_weights(),
        rollout_state_provider=lambda: {
            route: str(st.status)
            for route, st in (state.rollouts.states() if state.rollouts else {}).items()})
    table = tuple(routes) if routes is not None else all_routes()
    app[ALL_ROUTES] = table
    specs: dict[AbstractRoute, ApiRoute] = {}
    for spec in table:
        specs[app.router.add_route(spec.method, spec.path, spec.serve)] = spec
    app[SPECS] = specs
    return app
