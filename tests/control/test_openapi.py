"""``GET /api/openapi.json`` stays complete and true: every route the real admin app
registers is described, with its method, parameters, role and a summary; every parameter
schema accepts exactly what the validator the handler runs accepts; the inputs are
validated before the handler runs; the document is valid OpenAPI 3.1. (The running proxy is
fuzzed against the document in ``tests/security/test_openapi_fuzz.py``.)"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field, ValidationError

from control.api import ApiRoute
from control.api.fields import (
    MAX_TIME,
    MIN_TIME,
    Body,
    Name,
    Params,
    QueryInt,
    SemVer,
    parse_time,
)
from control.api.inputs import body_of, path_of, query_of
from control.api.openapi import openapi_document, openapi_path
from control.auth import Role, TokenTable
from proxy.admin import ALL_ROUTES, create_admin_app
from proxy.app import ProxyState
from proxy.config_load import parse_settings

SETTINGS = {
    "version": 1, "listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"},
    "backends": {"v1": {"endpoints": ["http://127.0.0.1:9"]}},
    "routes": [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
                "split": {"weights": {"a": 1}}}],
}


@pytest.fixture
def admin_app() -> web.Application:
    return create_admin_app(ProxyState(parse_settings(SETTINGS)), TokenTable())


@pytest.fixture
def document(admin_app: web.Application) -> dict[str, Any]:
    routes: tuple[ApiRoute, ...] = admin_app[ALL_ROUTES]
    return openapi_document(routes)


def registered(app: web.Application) -> Iterator[tuple[str, str]]:
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp's automatic HEAD for GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert path, route
        yield route.method, openapi_path(path)


def test_every_registered_route_is_described(
    admin_app: web.Application, document: dict[str, Any]
) -> None:
    routes = list(registered(admin_app))
    assert ("GET", "/api/v1/audit") in routes and ("GET", "/api/openapi.json") in routes
    for method, path in routes:
        assert path in document["paths"], path
        op = document["paths"][path].get(method.lower())
        assert op is not None, (method, path)
        assert op["summary"].strip(), (method, path)
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == set(routes)  # and nothing that is not served
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_roles_parameters_and_bodies(
    admin_app: web.Application, document: dict[str, Any]
) -> None:
    for spec in admin_app[ALL_ROUTES]:
        op = document["paths"][openapi_path(spec.path)][spec.method.lower()]
        role = str(spec.role) if spec.role else ("any" if spec.any_user else None)
        assert op["x-splitway-role"] == role
        if role is None:
            assert op["security"] == [] and "Public" in op["description"]
        else:
            assert op["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(op["responses"])
            if role != "any":
                assert f"`{role}`" in op["description"]
        names = {(p["in"], p["name"]) for p in op["parameters"]}
        path_names = re.findall(r"\{([^}:]+)", spec.path)
        assert {n for w, n in names if w == "path"} == set(path_names)
        if path_names:
            assert spec.params is not None and "404" in op["responses"]
        for name in spec.query.model_fields if spec.query else ():
            assert ("query", name) in names
        assert ("requestBody" in op) == (spec.body is not None or spec.upload is not None)
        assert {str(c) for c in spec.success} <= set(op["responses"])
        if op["parameters"] or "requestBody" in op:
            assert "422" in op["responses"]
        for field, _rule in spec.semantic:
            assert field in op["x-splitway-semantic-422"]
            assert f"`{field}`" in op["responses"]["422"]["description"]
    audit = document["paths"]["/api/v1/audit"]["get"]
    by_name = {p["name"]: p for p in audit["parameters"]}
    assert set(by_name) >= {"type", "actor", "resource", "severity", "since", "until",
                            "limit", "cursor"}
    assert by_name["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000,
                                          "default": 100}
    assert by_name["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert "rollout." in by_name["type"]["schema"]["enum"]
    page = audit["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/EventPage"}
    export = document["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "application/x-ndjson", "application/yaml",
                           "text/csv"}
    assert export["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/EventBody"}}
    assert export["text/csv"]["schema"] == {"type": "string"}
    weights = document["paths"]["/api/v1/routes/{route}/weights"]["put"]
    assert weights["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WeightsBody"}
    body = document["components"]["schemas"]["WeightsBody"]["properties"]["weights"]
    assert body["propertyNames"] == {"pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}
    assert "patternProperties" not in body and body["minProperties"] == 1
    register = document["paths"]["/api/v1/models/{model}/versions"]["post"]
    assert set(register["responses"]) >= {"201", "400", "409", "413", "422"}
    assert "lineage.parent" in register["x-splitway-semantic-422"]
    gate = document["paths"]["/api/v1/routes/{route}/rollout/{action}"]["post"]
    action = next(p for p in gate["parameters"] if p["name"] == "action")
    assert set(action["schema"]["enum"]) == {"pause", "resume", "promote", "rollback",
                                             "abort"}
    assert gate["requestBody"]["required"] is False  # every field has a default
    error = document["components"]["responses"]["E422"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "field" in document["components"]["schemas"]["Error"]["properties"]


def _nodes(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def test_document_is_structurally_valid(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for key, value in _nodes(document):
        if key == "$ref" and isinstance(value, str):
            assert value.startswith("#/components/"), value
            node: Any = document
            for part in value[2:].split("/"):
                assert part in node, f"dangling {value}"
                node = node[part]
        # pydantic writes bounds it cannot place (after a validator) under their Python
        # names, which JSON Schema ignores: the document would promise less than is checked
        assert key not in ("ge", "le", "gt", "lt", "min_length", "max_length"), key
        if key == "pattern" and isinstance(value, str):
            re.compile(value)
    for ops in document["paths"].values():
        for op in ops.values():
            assert op["responses"] and all(re.fullmatch(r"[1-5](\d\d|XX)", c)
                                           for c in op["responses"])
    json.dumps(document)  # plain JSON


def test_document_validates_with_openapi_spec_validator(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


#: Values a client might send for any path or query parameter (the issue's refusals:
#: names, SemVer, limits, empty strings, ids, times, white space, unicode).
PROBES = ("", "0", "a", "sentiment", "Sentiment", "-a", "a" * 64, "a" * 65, "../etc", "a\n",
          "1.0.0", "1.0", "01.0.0", "1.0.0-rc.1+build.5", "v1.0.0", "prm-0123456789ab",
          "prm-0123456789AB", "evt-5", "0" * 64, "f" * 63, "2024-05-01T12:00:00Z",
          "2024-05-01T12:00:00+02:00", "2024-05-01", "2024-05-01T12:00:00", "1", "100",
          "1000", "1001", "-1", " 5", "5.0", "asc", "desc", "staging", "development",
          "production", "archived", "pending", "info", "loud", "rollout.", "rollout",
          "rollout.step", "nope.", "json", "csv", "xml", "alice", "\u00e9t\u00e9", "x\x00y",
          "pause", "promote", "explode", " ", "\x1c", "\ufeff", "a b", "2016-12-31T23:59:60Z")


def _typed(value: str, schema: dict[str, Any]) -> Any:
    """A parameter's text as the JSON value the schema is about (integers are numbers)."""
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value


def _accepts(model: type[BaseModel], name: str, value: str) -> bool:
    try:
        model.model_validate({name: value})
    except ValidationError as exc:
        return not any(e["loc"][:1] == (name,) for e in exc.errors())
    return True


def test_every_parameter_schema_accepts_exactly_what_its_validator_accepts(
    admin_app: web.Application, document: dict[str, Any]
) -> None:
    # The JSON Schema validator schemathesis checks with (ECMA-262 regex semantics: ``$`` is
    # the end of the text, which Python's jsonschema package reads the Python way).
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    checked = 0
    for spec in admin_app[ALL_ROUTES]:
        op = document["paths"][openapi_path(spec.path)][spec.method.lower()]
        for param in op["parameters"]:
            model = spec.params if param["in"] == "path" else spec.query
            assert model is not None
            schema = {**param["schema"], "components": document["components"]}
            check = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
            for value in PROBES:
                documented = check.is_valid(_typed(value, param["schema"]))
                assert documented == _accepts(model, param["name"], value), (
                    spec.method, spec.path, param["name"], value, documented)
                checked += 1
    assert checked > 1000


class Inner(BaseModel):
    x: int


class Outer(BaseModel):
    inner: Inner
    items: list[Inner] = []


def _other_inner() -> type[BaseModel]:
    class Inner(BaseModel):  # same name, another schema
        y: str

    class Wrapper(BaseModel):
        inner: Inner

    return Wrapper


class NamePath(Params):
    name: Name


class NQuery(Params):
    n: QueryInt


async def _noop(request: web.Request) -> web.Response:
    return web.json_response({})


def test_defs_are_hoisted_and_name_clashes_renamed() -> None:
    doc = openapi_document([
        ApiRoute("POST", "/a/{name:[a-z]+}/x", _noop, "A", role=Role.OPERATOR, body=Outer,
                 params=NamePath, query=NQuery),
        ApiRoute("POST", "/b", _noop, "B", any_user=True, body=_other_inner(),
                 response=Outer),
    ], version="1.2.3")
    schemas = doc["components"]["schemas"]
    assert schemas["Inner"]["properties"] == {"x": {"title": "X", "type": "integer"}}
    assert schemas["Outer"]["properties"]["inner"] == {"$ref": "#/components/schemas/Inner"}
    renamed = f"{__name__}.Inner"
    assert schemas[renamed]["properties"]["y"]["type"] == "string"
    assert schemas["Wrapper"]["properties"]["inner"] == {"$ref": f"#/components/schemas/{renamed}"}
    op = doc["paths"]["/a/{name}/x"]["post"]
    assert op["parameters"][0] == {"name": "name", "in": "path", "required": True, "schema": {
        "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}}
    assert op["parameters"][1] == {"name": "n", "in": "query", "required": True,
                                   "schema": {"type": "integer"}}
    assert {"404", "422", "200"} <= set(op["responses"])
    assert doc["paths"]["/b"]["post"]["x-splitway-role"] == "any"
    assert doc["info"]["version"] == "1.2.3"
    assert all("$defs" not in s for s in schemas.values())


def test_a_path_parameter_without_a_model_is_refused() -> None:
    with pytest.raises(ValueError, match="path parameters"):
        openapi_document([ApiRoute("GET", "/a/{name}", _noop, "A")])


@pytest.fixture
async def served(admin_app: web.Application) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(admin_app)) as client:
        yield client


async def test_served_without_a_token(
    served: TestClient[Any, Any], document: dict[str, Any]
) -> None:
    r = await served.get("/api/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    assert await r.json() == document
    r = await served.get("/api/v1/audit")  # a token is needed for the API itself
    assert r.status == 401


async def test_a_405_names_the_allowed_methods(served: TestClient[Any, Any]) -> None:
    r = await served.request("TRACE", "/api/v1/models")
    assert r.status == 405 and "GET" in r.headers["Allow"]
    assert (await r.json())["error"]


class VersionQuery(Params):
    v: SemVer
    limit: QueryInt = 10


class ItemBody(Body):
    count: int = Field(ge=1)


class OptionalBody(Body):
    note: str | None = None


async def _echo(request: web.Request) -> web.Response:
    p, q = path_of(request, NamePath), query_of(request, VersionQuery)
    return web.json_response({"name": p.name, "v": q.v, "limit": q.limit,
                              "count": body_of(request, ItemBody).count})


async def _optional(request: web.Request) -> web.Response:
    return web.json_response({"note": body_of(request, OptionalBody).note})


async def _undeclared(request: web.Request) -> web.Response:
    return web.json_response({"v": query_of(request, VersionQuery).v})


@pytest.fixture
async def inputs_app() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_admin_app(ProxyState(parse_settings(SETTINGS)), None, routes=[
        ApiRoute("POST", "/t/{name}", _echo, "echo", params=NamePath, query=VersionQuery,
                 body=ItemBody),
        ApiRoute("POST", "/o", _optional, "optional body", body=OptionalBody),
        ApiRoute("GET", "/u", _undeclared, "reads a model it does not declare"),
    ])
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_inputs_are_validated_before_the_handler_runs(
    inputs_app: TestClient[Any, Any],
) -> None:
    async def post(path: str, **kw: Any) -> tuple[int, Any]:
        async with inputs_app.post(path, **kw) as r:
            return r.status, await r.json()

    assert await post("/t/m?v=1.0.0", json={"count": 2}) == (
        200, {"name": "m", "v": "1.0.0", "limit": 10, "count": 2})
    for path, body, field in (
        ("/t/M?v=1.0.0", {"count": 1}, "name"),  # the path first
        ("/t/m?v=1.0", {"count": 1}, "v"),
        ("/t/m?v=1.0.0&limit=%205", {"count": 1}, "limit"),
        ("/t/m?v=1.0.0&v=2.0.0", {"count": 1}, "v"),  # given twice
        ("/t/m?v=1.0.0&colour=red", {"count": 1}, "colour"),  # unknown
        ("/t/m?v=1.0.0", {"count": 0}, "count"),
        ("/t/m?v=1.0.0", {"count": "1"}, "count"),  # strict: no coercion
        ("/t/m?v=1.0.0", {"count": 1, "extra": 1}, "extra"),
        ("/t/m?v=1.0.0", None, "body"),  # a required body
    ):
        status, err = await post(path, json=body)
        assert status == 422 and err["error"] == "invalid" and err["field"] == field, (
            path, body, err)
        assert err["detail"].startswith(field), err
    assert await post("/o") == (200, {"note": None})  # an optional body may be left out
    assert await post("/o", json={"note": "x"}) == (200, {"note": "x"})
    assert (await post("/o", json={"note": 1}))[0] == 422
    status, _ = await post("/o", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400
    async with inputs_app.get("/u?v=1.0.0") as r:  # a programming error, never silent
        assert r.status == 500


def test_times_are_rfc3339_with_an_offset_and_clamped() -> None:
    assert parse_time("2024-05-01T14:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_time("2024-05-01t12:00:00.1234567z") == datetime(
        2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_time("2016-12-31T23:59:60Z") == datetime(2017, 1, 1, tzinfo=UTC)  # leap
    assert parse_time("0001-01-01T00:00:00+01:00") == MIN_TIME  # before year 1 UTC
    assert parse_time("0999-06-01T00:00:00Z") == MIN_TIME
    assert parse_time("9999-12-31T23:59:59-01:00") == MAX_TIME
    for bad in ("2024-05-01", "2024-05-01T12:00:00", " 2024-05-01T12:00:00Z",
                "2024-13-01T00:00:00Z", "2024-05-01 12:00:00Z", "yesterday"):
        with pytest.raises(ValueError):
            parse_time(bad)
