"""The admin API as data: every route is an :class:`ApiRoute`, registered on the admin app
by :func:`proxy.admin.create_admin_app` and described by :mod:`control.api.openapi` from
the same table, so the OpenAPI document cannot drift from what is served.

Modules contributing routes expose ``ROUTES: tuple[ApiRoute, ...]``; add the module to
:data:`ROUTE_MODULES`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import AbstractRoute
from pydantic import BaseModel

from control import strict_json
from control.auth import Principal, Role
from proxy.connection import reason_of
from proxy.errors import (
    ApiError,
    BadRequestError,
    BodyTooLargeError,
    ClientClosedError,
    ClientTimeoutError,
    InvalidInputError,
)

log = logging.getLogger("splitway.admin")

M = TypeVar("M", bound=BaseModel)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Default request body cap of an admin operation (JSON bodies are small); an operation
#: that takes uploads names a larger ``max_body``.
DEFAULT_MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One admin API operation.

    ``role`` None means public (no token needed, e.g. ``/healthz``); ``any_user`` means any
    authenticated caller. ``max_body`` caps the request body: the admin middleware answers
    413 when Content-Length is over it, and :func:`read_json` stops reading a chunked body
    once past it.

    Inputs are pydantic models (:mod:`control.api.fields`): ``params`` for the path
    parameters, ``query`` for the query string, ``body`` for a JSON body (optional when
    none of its fields is required). The app registers :meth:`serve`, which validates all
    three before the handler runs (a 422 naming the first bad field); the handler reads the
    results with :func:`control.api.inputs.path_of` / ``query_of`` / ``body_of``, and
    :mod:`control.api.openapi` describes the same models, so the document and the
    validation cannot drift. ``upload`` names the media type of a raw body instead.

    ``response`` is the type of the JSON answer (a model, or e.g. ``list[Model]``),
    ``success`` its status codes and ``errors`` the statuses the operation answers beyond
    those every operation may (401/403 with a role, 404 with path parameters, 400/413/422
    with input). ``semantic`` lists ``(field, rule)`` pairs for 422s no schema can state
    (cross-field rules, references to other resources); the document names them."""

    method: str
    path: str
    handler: Handler
    summary: str
    role: Role | None = None
    any_user: bool = False
    tag: str = "routes"
    body: type[BaseModel] | None = None
    response: Any = None
    params: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    content_type: str = "application/json"
    max_body: int = DEFAULT_MAX_BODY  # bytes; checked against Content-Length before reading
    success: tuple[int, ...] = (200,)
    errors: tuple[int, ...] = ()
    semantic: tuple[tuple[str, str], ...] = ()
    upload: str | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Validate the declared inputs, then run the handler (the registered endpoint)."""
        from control.api.inputs import validate_inputs

        await validate_inputs(self, request)
        return await self.handler(request)


#: The admin app's registered routes and the operation each serves.
SPECS = web.AppKey("specs", dict[AbstractRoute, ApiRoute])


def body_limit(request: web.Request) -> int:
    """The ``max_body`` of the operation ``request`` was routed to."""
    spec = request.app.get(SPECS, {}).get(request.match_info.route)
    return spec.max_body if spec is not None else DEFAULT_MAX_BODY


PRINCIPAL = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal | None:
    """The authenticated caller (set by the admin middleware), if any."""
    return request.get(PRINCIPAL)


def actor_of(request: web.Request) -> str:
    """The audit actor for a request: the token's user, or ``anonymous``."""
    p = principal_of(request)
    return p.user if p else "anonymous"


#: The admin app's ``limits.body_read_timeout_s``: read per request from the settings in
#: force, so a reload changes it, as for the data path.
BODY_READ_TIMEOUT: web.AppKey[Callable[[], float]] = web.AppKey("body_read_timeout_s")


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body piece by piece, within the operation's limits:

    - over its ``max_body`` — announced by Content-Length (before anything is read) or
      reached by a chunked body — :class:`BodyTooLargeError` (413);
    - no next piece within ``limits.body_read_timeout_s`` (:data:`BODY_READ_TIMEOUT`), a
      stalled client: :class:`ClientTimeoutError` (408; the connection closes after it);
    - the client closed the connection mid-body: :class:`ClientClosedError`, logged at
      debug level only (nobody is left to answer, and it is not the server's error);
    - a chunk that does not parse (:mod:`proxy.connection` fails the body at once):
      :class:`BadRequestError` (400).
    """
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(too_large(request.content_length, limit))
    timeout = request.app[BODY_READ_TIMEOUT]()
    size = 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.read(1 << 16)
        except TimeoutError:
            # Ends aiohttp's lingering read of the rest of the body after the answer (it
            # stops on a TimeoutError), so the stalled connection closes with the 408.
            request.content.set_exception(TimeoutError())
            raise ClientTimeoutError(
                f"the request body stalled: nothing arrived for {timeout:g}s "
                "(limits.body_read_timeout_s)") from None
        except ConnectionResetError:  # aiohttp's "Connection lost" when the client goes
            log.debug("client %s closed the connection mid-body: %s %s",
                      request.remote, request.method, request.path)
            raise ClientClosedError("the client closed the connection mid-body") from None
        except HttpProcessingError as exc:
            raise BadRequestError(f"malformed request body: {reason_of(exc)}") from None
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(too_large(None, limit))
        yield chunk


async def read_body(request: web.Request) -> bytes:
    """The whole request body, read through :func:`body_chunks` (its limits apply)."""
    return b"".join([chunk async for chunk in body_chunks(request)])


def too_large(size: int | None, limit: int) -> str:
    """The 413 message: the body's size when known, and the operation's limit."""
    what = "the request body" if size is None else f"the request body ({size} bytes)"
    return f"{what} is over this operation's limit of {limit} bytes"


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object: 413 over the body limit, 400 naming what is wrong for
    anything but JSON (``NaN``/``Infinity``, numbers out of range and nesting deeper than
    :data:`control.strict_json.MAX_DEPTH` included), 422 for JSON that is not an object."""
    try:
        data = strict_json.loads(await read_body(request) or b"null")
    except strict_json.JsonInputError as exc:
        raise ApiError(f"body is not JSON: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("body must be a JSON object", field="body")
    return data


def parse_body(model: type[M], data: dict[str, Any]) -> M:
    """Validate a JSON body with a pydantic model; a 422 naming the first bad field."""
    from control.api.inputs import validate

    return validate(model, data)
