"""``GET /api/openapi.json``: an OpenAPI 3.1 document generated from the route table.

The document is built from ``request.app[ALL_ROUTES]`` — the same
:class:`~control.api.ApiRoute` entries the admin app registers — so it cannot drift from
what is served (``tests/control/test_openapi.py`` checks every registered route appears).

- Paths keep aiohttp's ``{name}`` parameters (a ``{name:regex}`` loses its regex) and
  list them as required path parameters; ``query`` entries become query parameters.
- ``body`` models give the request body schema and ``response`` models the success
  schema, both from pydantic (``model_json_schema``), with nested ``$defs`` hoisted into
  ``components.schemas``. Two different models with one name keep the first name; the
  second is renamed ``<module>.<Name>`` and its references rewritten.
- An ``ApiRoute.content_type`` may list several media types separated by commas (the
  audit export answers in four formats); each gets an entry under ``content``.
- Errors share one schema (contract §4, plus ``field`` for bad input): 401/403 for
  operations needing a token, 422 where there is input, 404 where there are path
  parameters, and ``4XX``/``5XX`` everywhere.
- Security: bearer tokens (contract §8). Each operation states its role in its
  description and in the ``x-splitway-role`` extension (``viewer``, ``operator``...,
  ``any`` for any authenticated user, ``null`` for public operations).

Success is described as ``200`` for GET and as ``2XX`` for other methods, since a route
table entry does not say whether it answers 200 or 201.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from control.api import ApiRoute

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The JSON error shape (contract §4); `field` names the bad input.",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "error kind, e.g. invalid, forbidden"},
        "detail": {"type": "string"},
        "route": {"type": ["string", "null"]},
        "variant": {"type": ["string", "null"]},
        "request_id": {"type": ["string", "null"]},
        "field": {"type": "string", "description": "the bad field or parameter"},
    },
}
ERRORS = {
    "401": "Unauthorized: no token, or a token that matches nothing",
    "403": "Forbidden: the token lacks the role (or the API is read-only)",
    "404": "Not found",
    "422": "Invalid input; `field` names it",
    "4XX": "Client error",
    "5XX": "Server error (e.g. the state store failed)",
}


def openapi_path(path: str) -> str:
    """aiohttp's ``/a/{name:regex}`` as OpenAPI's ``/a/{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


class _Schemas:
    """``components.schemas``, filled model by model with ``$defs`` hoisted."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._names: dict[type[BaseModel], dict[str, str]] = {}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=_REF + "{model}", mode=mode)
        defs: dict[str, Any] = schema.pop("$defs", {})
        top = schema.get("title", model.__name__)
        renames: dict[str, str] = {}
        for name, sub in [*defs.items(), (top, schema)]:
            known = self.schemas.get(name)
            if known is not None and known != sub:
                renames[name] = f"{model.__module__}.{name}"
        for name, sub in [*defs.items(), (top, schema)]:
            self.schemas[renames.get(name, name)] = _rename_refs(sub, renames)
        return {"$ref": _REF + renames.get(top, top)}


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if not renames:
        return node
    if isinstance(node, dict):
        out = {k: _rename_refs(v, renames) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF):] in renames:
            out["$ref"] = _REF + renames[ref[len(_REF):]]
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def _role(route: ApiRoute) -> str | None:
    if route.role is not None:
        return str(route.role)
    return "any" if route.any_user else None


def _operation(route: ApiRoute, schemas: _Schemas) -> dict[str, Any]:
    role = _role(route)
    path_params = _PATH_PARAM.findall(route.path)
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_params
    ]
    params += [{"name": q.name, "in": "query", "required": q.required,
                "description": q.description, "schema": {"type": q.type}}
               for q in route.query]
    media = [m.strip() for m in route.content_type.split(",") if m.strip()]
    success: dict[str, Any] = {}
    for m in media:
        if route.response is not None and m == "application/json":
            success[m] = {"schema": schemas.ref(route.response, "serialization")}
        else:
            success[m] = {"schema": {"type": "object"} if m == "application/json"
                          else {"type": "string"}}
    ok = "200" if route.method == "GET" else "2XX"
    responses: dict[str, Any] = {ok: {"description": "Success", "content": success}}
    codes = ["4XX", "5XX"]
    if role is not None:
        codes += ["401", "403"]
    if path_params:
        codes.append("404")
    if route.query or route.body is not None or path_params:
        codes.append("422")
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    who = ("Public: no token needed." if role is None else
           "Any authenticated user." if role == "any" else f"Requires the `{role}` role.")
    op: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "description": f"{route.summary.rstrip('.')}. {who}",
        "tags": [route.tag],
        "parameters": params,
        "responses": responses,
        "security": [] if role is None else [{"bearer": []}],
        "x-splitway-role": role,
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": schemas.ref(route.body, "validation")}}}
    return op


def _operation_id(route: ApiRoute) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", openapi_path(route.path)).strip("_")
    return f"{route.method.lower()}_{words or 'root'}"


def openapi_document(routes: Iterable[ApiRoute], version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes`` (pure)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, None] = {}
    for route in routes:
        ops = paths.setdefault(openapi_path(route.path), {})
        ops[route.method.lower()] = _operation(route, schemas)
        tags[route.tag] = None
    schemas.schemas["Error"] = ERROR_SCHEMA
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "splitway admin API",
            "version": version or _version(),
            "description": "Admin API of the splitway proxy and control plane. Tokens are "
                           "sent as `Authorization: Bearer TOKEN`; roles: viewer, "
                           "operator, approver, admin.",
        },
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "responses": {f"E{code}": {"description": text, "content": {
                "application/json": {"schema": {"$ref": _REF + "Error"}}}}
                for code, text in ERRORS.items()},
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "an admin API token (see `splitway token create`)"}},
        },
    }


def _version() -> str:
    try:
        return metadata.version("splitway")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.0.0"


@lru_cache(maxsize=8)
def _cached_text(routes: tuple[ApiRoute, ...]) -> str:
    return json.dumps(openapi_document(routes), indent=1)


def document_text(routes: tuple[ApiRoute, ...]) -> str:
    """The document as JSON text, built once per route table."""
    try:
        return _cached_text(routes)
    except TypeError:  # an entry that cannot be hashed (say, a list as ``query``)
        return json.dumps(openapi_document(routes), indent=1)


async def openapi_json(request: web.Request) -> web.Response:
    from proxy.admin import ALL_ROUTES

    return web.Response(text=document_text(request.app[ALL_ROUTES]),
                        content_type="application/json")


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/openapi.json", openapi_json,
             "OpenAPI 3.1 description of this API", tag="meta"),
)
