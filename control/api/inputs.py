"""Validating an admin operation's declared inputs, before its handler runs.

:meth:`control.api.ApiRoute.serve` calls :func:`validate_inputs`: the path parameters, the
query string and the JSON body are each validated by the model the route declares
(``params``, ``query``, ``body``), in that order, and the first bad field is a 422 naming
it (``field``) — the same models :mod:`control.api.openapi` publishes. The handler then
reads the validated values with :func:`path_of`, :func:`query_of` and :func:`body_of`,
which refuse (500, a programming error the tests catch) a model the route did not
declare, so a handler cannot read inputs the document does not describe.

Query strings: a parameter given twice is a 422 (which one would count is a guess), and
one the model does not know is a 422 (a typo would silently widen a filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from control.api import ApiRoute

M = TypeVar("M", bound=BaseModel)

@dataclass(frozen=True, slots=True)
class Inputs:
    """An operation's validated inputs (``None`` where it declares none)."""

    path: BaseModel | None = None
    query: BaseModel | None = None
    body: BaseModel | None = None


INPUTS = web.RequestKey("inputs", Inputs)


def body_required(model: type[BaseModel]) -> bool:
    """Whether a body must be sent: some field of ``model`` has no default."""
    return any(f.is_required() for f in model.model_fields.values())


def invalid(exc: ValidationError, model: type[BaseModel]) -> InvalidInputError:
    """The 422 for the first error of a validation: ``field`` is its dotted location."""
    err = exc.errors(include_url=False)[0]
    ctx = err.get("ctx") or {}
    field = ".".join(str(p) for p in err["loc"]) or str(ctx.get("field") or "body")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        msg = f"unknown parameter or field (expected one of: {known})"
    return InvalidInputError(f"{field}: {msg}", field=field)


def validate(model: type[M], data: Any) -> M:
    """``data`` validated by ``model``, or the 422 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, model) from None


def query_dict(request: web.Request) -> dict[str, str]:
    """The query string as a dict; a parameter given more than once is a 422."""
    out: dict[str, str] = {}
    for name, value in request.query.items():
        if name in out:
            raise InvalidInputError(f"{name}: given more than once", field=name)
        out[name] = value
    return out


async def validate_inputs(route: ApiRoute, request: web.Request) -> None:
    """Validate ``request`` against ``route``'s models; the results go on the request."""
    from control.api import read_json

    path = validate(route.params, dict(request.match_info)) if route.params else None
    query = validate(route.query, query_dict(request)) if route.query else None
    body = None
    if route.body is not None:
        sent = request.body_exists or body_required(route.body)
        body = validate(route.body, await read_json(request) if sent else {})
    request[INPUTS] = Inputs(path, query, body)


def _get(request: web.Request, where: str, model: type[M]) -> M:
    inputs = request.get(INPUTS)
    value = getattr(inputs, where, None)
    if not isinstance(value, model):
        raise TypeError(f"{request.method} {request.match_info.route.resource} does not "
                        f"declare {model.__name__} as its {where} model")
    return value


def path_of(request: web.Request, model: type[M]) -> M:
    """The validated path parameters (``model`` must be the route's ``params``)."""
    return _get(request, "path", model)


def query_of(request: web.Request, model: type[M]) -> M:
    """The validated query parameters (``model`` must be the route's ``query``)."""
    return _get(request, "query", model)


def body_of(request: web.Request, model: type[M]) -> M:
    """The validated JSON body (``model`` must be the route's ``body``)."""
    return _get(request, "body", model)
