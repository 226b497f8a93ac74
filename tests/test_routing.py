"""Router: match conditions, prefix boundaries and precedence."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.config import RouteConfig
from proxy.routing import Router, normalize_host


def route(name: str, **match: Any) -> RouteConfig:
    return RouteConfig.model_validate(
        {"name": name, "match": match, "variants": {"v": "b"}, "split": {"weights": {"v": 1}}}
    )


def pick(
    router: Router,
    path: str,
    *,
    method: str = "POST",
    host: str | None = "proxy.local",
    headers: dict[str, str] | None = None,
) -> str | None:
    found = router.match(method, host, path, CIMultiDict(headers or {}))
    return None if found is None else found.name


# --- path prefix boundaries ------------------------------------------------------------

PREFIX = Router.compile([route("a", path_prefix="/v1/models/a")])
SLASHED = Router.compile([route("s", path_prefix="/v1/models/")])


@pytest.mark.parametrize(
    ("router", "path", "expected"),
    [
        (PREFIX, "/v1/models/a", "a"),
        (PREFIX, "/v1/models/a/", "a"),
        (PREFIX, "/v1/models/a/predict", "a"),
        (PREFIX, "/v1/models/a:predict", "a"),
        (PREFIX, "/v1/models/ab", None),
        (PREFIX, "/v1/models/a.b", None),
        (PREFIX, "/v1/models", None),
        (PREFIX, "/V1/models/a", None),  # paths are case-sensitive
        (SLASHED, "/v1/models/", "s"),
        (SLASHED, "/v1/models/anything", "s"),
        (SLASHED, "/v1/models", None),
    ],
)
def test_prefix_boundary(router: Router, path: str, expected: str | None) -> None:
    assert pick(router, path) == expected


def test_root_prefix_matches_everything() -> None:
    router = Router.compile([route("root")])
    assert pick(router, "/") == "root"
    assert pick(router, "/anything/at:all") == "root"


# --- host, header, method --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "h"),
        ("API.Example.COM", "h"),
        ("api.example.com:8080", "h"),
        ("api.example.com.", "h"),
        ("other.example.com", "fallback"),
        ("example.com", "fallback"),
        (None, "fallback"),
        ("", "fallback"),
    ],
)
def test_host(host: str | None, expected: str) -> None:
    router = Router.compile([route("fallback"), route("h", host="Api.Example.com")])
    assert pick(router, "/x", host=host) == expected


def test_host_without_fallback_is_no_match() -> None:
    router = Router.compile([route("h", host="api.example.com")])
    assert pick(router, "/x", host="other") is None
    assert pick(router, "/x", host=None) is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Example.com:443", "example.com"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("host.", "host"),
    ],
)
def test_normalize_host(raw: str, normal: str) -> None:
    assert normalize_host(raw) == normal


def test_ipv6_host() -> None:
    router = Router.compile([route("six", host="[::1]")])
    assert pick(router, "/", host="[::1]:9000") == "six"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-tenant": "acme", "x-tier": "gold"}, "hdr"),
        ({"X-Tenant": "acme", "X-TIER": "gold", "other": "1"}, "hdr"),  # names: any case
        ({"x-tenant": "acme"}, "plain"),  # all pairs are needed
        ({"x-tenant": "ACME", "x-tier": "gold"}, "plain"),  # values are exact
        ({}, "plain"),
    ],
)
def test_header(headers: dict[str, str], expected: str) -> None:
    router = Router.compile(
        [route("plain"), route("hdr", header={"X-Tenant": "acme", "x-tier": "gold"})]
    )
    assert pick(router, "/x", headers=headers) == expected


@pytest.mark.parametrize(
    ("method", "expected"), [("POST", "writes"), ("put", "writes"), ("GET", "plain")]
)
def test_method(method: str, expected: str) -> None:
    router = Router.compile([route("plain"), route("writes", method=["post", "PUT"])])
    assert pick(router, "/x", method=method) == expected


# --- precedence ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # 1. the longest prefix beats everything else
        ({"path": "/v1/models/a/x", "host": "h.io", "headers": {"x-t": "1"}}, "long"),
        # 2. same prefix: a host beats headers and method
        ({"path": "/v1/x", "host": "h.io", "headers": {"x-t": "1"}}, "host"),
        # 3. same prefix, no host: more headers beat fewer, and beat a method
        ({"path": "/v1/x", "headers": {"x-t": "1", "x-u": "2"}}, "two-headers"),
        ({"path": "/v1/x", "headers": {"x-t": "1"}}, "one-header"),
        # 4. then a method beats no method
        ({"path": "/v1/x", "method": "GET"}, "method"),
        # 5. full tie: config order
        ({"path": "/v1/x", "method": "POST"}, "first"),
        # a more specific route whose other conditions fail does not block
        ({"path": "/v1/models/a/x", "host": "elsewhere"}, "first"),
        ({"path": "/elsewhere"}, "root"),
    ],
)
def test_precedence(request_: dict[str, Any], expected: str) -> None:
    routes = [
        route("root"),
        route("first", path_prefix="/v1"),
        route("second", path_prefix="/v1"),
        route("method", path_prefix="/v1", method=["GET"]),
        route("one-header", path_prefix="/v1", header={"x-t": "1"}),
        route("two-headers", path_prefix="/v1", header={"x-t": "1", "x-u": "2"}),
        route("host", path_prefix="/v1", host="h.io"),
        route("long", path_prefix="/v1/models/a", host="h.io"),
    ]
    router = Router.compile(routes)
    kwargs = {"host": "proxy.local", **request_}
    path = kwargs.pop("path")
    assert pick(router, path, **kwargs) == expected
    # The ranking, not the config order, decides: reversing the config changes only
    # the full tie between "first" and "second".
    reverse = Router.compile(routes[::-1])
    assert pick(reverse, path, **kwargs) == ("second" if expected == "first" else expected)


def test_routes_exposes_precedence_order() -> None:
    router = Router.compile(
        [route("root"), route("b", path_prefix="/b"), route("ab", path_prefix="/a/b")]
    )
    assert [r.name for r in router.routes] == ["ab", "b", "root"]


def test_no_routes_no_match() -> None:
    assert pick(Router.compile([]), "/") is None
