"""``GET /api/openapi.json``: an OpenAPI 3.1 document generated from the route table.

The document is built from ``request.app[ALL_ROUTES]`` — the same
:class:`~control.api.ApiRoute` entries the admin app registers — and every schema in it
is the JSON Schema of the pydantic model that validates that input at run time
(:meth:`ApiRoute.serve` validates ``params``, ``query`` and ``body`` before the handler
runs), so the document cannot drift from what is served or accepted.
``tests/control/test_openapi.py`` checks the table; ``tests/security/test_openapi_fuzz.py``
fuzzes the running proxy against the document with schemathesis.

- Paths keep aiohttp's ``{name}`` parameters (a ``{name:regex}`` loses its regex; the
  ``params`` model says what the parameter takes). Each field of ``params`` is a required
  path parameter, each field of ``query`` a query parameter (required when it has no
  default). A route with a path parameter and no ``params`` model is a programming error.
- ``body`` models give the request body (required when a field is); ``upload`` a raw
  body of that media type; ``response`` the success schema (a model, or a type such as
  ``list[Model]``), under each status of ``success``. Nested ``$defs`` are hoisted into
  ``components.schemas``; two different schemas with one name keep the first name, the
  second is renamed ``<module>.<Name>`` and its references rewritten.
- Constrained dict keys (variant names, metric names) are ``propertyNames``, not
  ``patternProperties`` (which would let any other key through).
- An ``ApiRoute.content_type`` may list several media types separated by commas (the
  audit export answers in four formats); each gets an entry under ``content``.
- Errors share one schema (the JSON error shape of ``proxy/errors.py``, plus ``field``
  for bad input), listed per operation: 401/403 for operations needing a token, 404 where
  there are path parameters, 400/413 where there is a body, 422 where there is input, the
  route's own ``errors`` (e.g. 409) and ``5XX``. The 422s a schema cannot state (a rule
  across fields, a reference to another resource) are listed in the operation's 422
  description and in ``x-splitway-semantic-422`` (field -> rule).
- Security: bearer tokens. Each operation states its role in its description and in the
  ``x-splitway-role`` extension (``viewer``, ``operator``..., ``any`` for any
  authenticated user, ``null`` for public operations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from typing import Any, get_args

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from control.api import ApiRoute
from control.api.inputs import body_required

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The JSON error shape (docs/admin-api.md); `field` names the bad input.",
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
    "400": "Bad request: the body is not JSON",
    "401": "Unauthorized: no token, or a token that matches nothing",
    "403": "Forbidden: the token lacks the role (or the API is read-only)",
    "404": "Not found",
    "409": "Conflict with the current state (e.g. it exists, or a rollout is running)",
    "413": "The request body is over this operation's limit",
    "422": "Invalid input; `field` names it",
    "5XX": "Server error (e.g. the state store failed or is unavailable)",
}


def openapi_path(path: str) -> str:
    """aiohttp's ``/a/{name:regex}`` as OpenAPI's ``/a/{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


class _JsonSchema(GenerateJsonSchema):
    """pydantic's generator, with constrained dict keys as ``propertyNames``."""

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        pattern_props = json_schema.pop("patternProperties", None)
        if pattern_props:
            ((pattern, values),) = pattern_props.items()
            json_schema["propertyNames"] = {**json_schema.get("propertyNames", {}),
                                            "pattern": pattern}
            json_schema["additionalProperties"] = values
        return json_schema


def _json_schema(tp: Any, mode: JsonSchemaMode) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_json_schema(ref_template=_REF + "{model}", mode=mode,
                                    schema_generator=_JsonSchema)
    return TypeAdapter(tp).json_schema(ref_template=_REF + "{model}", mode=mode,
                                       schema_generator=_JsonSchema)


class _Schemas:
    """``components.schemas``, filled type by type with ``$defs`` hoisted."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def _hoist(self, schema: dict[str, Any], module: str, top: str | None) -> dict[str, Any]:
        """Move ``$defs`` (and, with ``top``, the schema itself) into the components;
        the schema (or a reference to it) with references rewritten."""
        defs: dict[str, Any] = schema.pop("$defs", {})
        named = [*defs.items(), *([(top, schema)] if top else [])]
        renames = {name: f"{module}.{name}" for name, sub in named
                   if self.schemas.get(name, sub) != sub}
        for name, sub in named:
            self.schemas[renames.get(name, name)] = _rename_refs(sub, renames)
        if top:
            return {"$ref": _REF + renames.get(top, top)}
        return dict(_rename_refs(schema, renames))

    def schema(self, tp: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        """A model as a reference to its component; any other type inline."""
        schema = _json_schema(tp, mode)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self._hoist(schema, tp.__module__, str(schema.get("title", tp.__name__)))
        inner = [a for a in get_args(tp) if isinstance(a, type)]  # list[Model]: its module
        return self._hoist(schema, inner[0].__module__ if inner else "types", None)

    def parameters(self, model: type[BaseModel], where: str) -> list[dict[str, Any]]:
        """One OpenAPI parameter per field of ``model``."""
        schema = self._hoist(_json_schema(model, "validation"), model.__module__, None)
        required = set(schema.get("required", ()))
        params = []
        for name, prop in schema.get("properties", {}).items():
            prop = {k: v for k, v in prop.items() if k not in ("title", "description")}
            if name not in required:
                prop = _not_null(prop)
            param: dict[str, Any] = {"name": name, "in": where,
                                     "required": where == "path" or name in required,
                                     "schema": prop}
            if description := schema["properties"][name].get("description"):
                param["description"] = description
            params.append(param)
        return params


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its ``null`` branch and ``null`` default
    (a query parameter is absent, never null)."""
    branches = prop.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        others = {k: v for k, v in prop.items() if k != "anyOf"}
        prop = {**rest[0], **others} if len(rest) == 1 else {**others, "anyOf": rest}
    if "default" in prop and prop["default"] is None:
        prop = {k: v for k, v in prop.items() if k != "default"}
    return prop


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


def _parameters(route: ApiRoute, schemas: _Schemas) -> list[dict[str, Any]]:
    names = _PATH_PARAM.findall(route.path)
    params = schemas.parameters(route.params, "path") if route.params else []
    if sorted(p["name"] for p in params) != sorted(names):
        raise ValueError(f"{route.method} {route.path}: path parameters {names} but the "
                         f"params model has {[p['name'] for p in params]}")
    if route.query is not None:
        params += schemas.parameters(route.query, "query")
    return params


def _success(route: ApiRoute, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media in (m.strip() for m in route.content_type.split(",") if m.strip()):
        if media == "application/json":
            schema = ({"type": "object"} if route.response is None
                      else schemas.schema(route.response, "serialization"))
        elif media == "application/octet-stream":
            schema = {"type": "string", "format": "binary"}
        else:
            schema = {"type": "string"}
        content[media] = {"schema": schema}
    return {"description": "Success", "content": content}


def _errors(route: ApiRoute, has_input: bool) -> dict[str, Any]:
    codes = {"5XX", *map(str, route.errors)}
    if _role(route) is not None:
        codes |= {"401", "403"}
    if route.params is not None:
        codes.add("404")
    if route.body is not None or route.upload is not None:
        codes.add("413")
    if route.body is not None:
        codes.add("400")
    if has_input or route.semantic:
        codes.add("422")
    out: dict[str, Any] = {code: {"$ref": f"#/components/responses/E{code}"}
                           for code in sorted(codes)}
    if route.semantic:
        rules = "; ".join(f"`{f}`: {rule}" for f, rule in route.semantic)
        out["422"] = {"description": f"{ERRORS['422']}. Beyond the schema: {rules}",
                      "content": _ERROR_CONTENT}
    return out


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": _REF + "Error"}}}


def _operation(route: ApiRoute, schemas: _Schemas) -> dict[str, Any]:
    role = _role(route)
    params = _parameters(route, schemas)
    responses = {str(code): _success(route, schemas) for code in route.success}
    has_input = bool(params) or route.body is not None or route.upload is not None
    responses.update(_errors(route, has_input))
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
    if route.semantic:
        op["x-splitway-semantic-422"] = dict(route.semantic)
    if route.body is not None:
        op["requestBody"] = {"required": body_required(route.body), "content": {
            "application/json": {"schema": schemas.schema(route.body, "validation")}}}
    elif route.upload is not None:
        op["requestBody"] = {"required": True, "content": {route.upload: {"schema": {
            "type": "string", "format": "binary", "minLength": 1}}}}
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
                           "operator, approver, admin. A method a path does not take is "
                           "answered 405 with an `Allow` header. Every schema here is the "
                           "one the server validates with.",
        },
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "responses": {f"E{code}": {"description": text, "content": _ERROR_CONTENT}
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
def document_text(routes: tuple[ApiRoute, ...]) -> str:
    """The document as JSON text, built once per route table."""
    return json.dumps(openapi_document(routes), indent=1)


async def openapi_json(request: web.Request) -> web.Response:
    from proxy.admin import ALL_ROUTES

    return web.Response(text=document_text(request.app[ALL_ROUTES]),
                        content_type="application/json")


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/openapi.json", openapi_json,
             "OpenAPI 3.1 description of this API", tag="meta"),
)
