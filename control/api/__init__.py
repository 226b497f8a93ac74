"""The admin API as data: every route is an :class:`ApiRoute`, registered on the admin app
by :func:`proxy.admin.create_admin_app` and described by :mod:`control.api.openapi` from
the same table, so the OpenAPI document cannot drift from what is served.

Modules contributing routes expose ``ROUTES: tuple[ApiRoute, ...]``; add the module to
:data:`ROUTE_MODULES`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from control.auth import Principal, Role
from proxy.errors import ApiError, InvalidInputError

M = TypeVar("M", bound=BaseModel)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    description: str
    required: bool = False
    type: str = "string"  # an OpenAPI scalar type


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One admin API operation.

    ``role`` None means public (no token needed, e.g. ``/healthz``); ``any_user`` means any
    authenticated caller. ``body`` and ``response`` are pydantic models, used for the
    OpenAPI schemas (and by handlers to validate input)."""

    method: str
    path: str
    handler: Handler
    summary: str
    role: Role | None = None
    any_user: bool = False
    tag: str = "routes"
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    content_type: str = "application/json"


PRINCIPAL = "splitway.principal"


def principal_of(request: web.Request) -> Principal | None:
    """The authenticated caller (set by the admin middleware), if any."""
    value = request.get(PRINCIPAL)
    return value if isinstance(value, Principal) else None


def actor_of(request: web.Request) -> str:
    """The audit actor for a request: the token's user, or ``anonymous``."""
    p = principal_of(request)
    return p.user if p else "anonymous"


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming what is wrong."""
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"body is not JSON: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("body must be a JSON object", field="body")
    return data


def parse_body(model: type[M], data: dict[str, Any]) -> M:
    """Validate a JSON body with a pydantic model; a 422 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidInputError(f"{field}: {err['msg']}", field=field) from None
