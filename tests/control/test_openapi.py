"""``GET /api/openapi.json`` stays complete: every route the real admin app registers is
described, with its method, parameters, role and a summary; the document is valid
OpenAPI 3.1."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from control.api import ApiRoute, QueryParam
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
        for name in re.findall(r"\{([^}:]+)", spec.path):
            assert ("path", name) in names
        for q in spec.query:
            assert ("query", q.name) in names
        assert ("requestBody" in op) == (spec.body is not None)
    audit = document["paths"]["/api/v1/audit"]["get"]
    assert {p["name"] for p in audit["parameters"]} >= {
        "type", "actor", "resource", "severity", "since", "until", "limit", "cursor"}
    page = audit["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/EventPage"}
    export = document["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "application/x-ndjson", "application/yaml",
                           "text/csv"}
    weights = document["paths"]["/api/v1/routes/{route}/weights"]["put"]
    assert weights["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WeightsBody"}
    error = document["components"]["responses"]["E422"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "field" in document["components"]["schemas"]["Error"]["properties"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_document_is_structurally_valid(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert part in node, f"dangling {ref}"
            node = node[part]
    for ops in document["paths"].values():
        for op in ops.values():
            assert op["responses"] and all(re.fullmatch(r"[1-5](\d\d|XX)", c)
                                           for c in op["responses"])
    json.dumps(document)  # plain JSON


def test_document_validates_with_openapi_spec_validator(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


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


async def _noop(request: web.Request) -> web.Response:
    return web.json_response({})


def test_defs_are_hoisted_and_name_clashes_renamed() -> None:
    doc = openapi_document([
        ApiRoute("POST", "/a/{name:[a-z]+}/x", _noop, "A", role=Role.OPERATOR, body=Outer,
                 query=(QueryParam("n", "a number", required=True, type="integer"),)),
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
    assert op["parameters"][0] == {"name": "name", "in": "path", "required": True,
                                   "schema": {"type": "string"}}
    assert op["parameters"][1]["schema"] == {"type": "integer"} and op["parameters"][1][
        "required"]
    assert {"404", "422", "2XX"} <= set(op["responses"])
    assert doc["paths"]["/b"]["post"]["x-splitway-role"] == "any"
    assert doc["info"]["version"] == "1.2.3"
    assert all("$defs" not in s for s in schemas.values())


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
