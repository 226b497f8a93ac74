"""The request target through the real process: what a route matched is what its backend
gets, byte for byte, and a client cannot reach past a route's prefix.

Two routes: ``/rec`` goes to the ``rec`` backend, everything else to ``other``. Both are
:class:`~tests.security.raw_backend.RawBackend` instances, which record the request line's
target as it came off the wire. Requests are written by hand on raw sockets, so no client
library normalizes them on the way in either.

Before the fix the router matched aiohttp's ``request.path`` while the HTTP client
resolved dot-segments (and decoded ``%2e``) in the URL it built, so
``POST /rec/../../v2/repository/models/x/unload`` reached the ``rec`` backend as
``/v2/repository/models/x/unload`` (Triton's model-unload endpoint) and
``/rec/%2e%2e/admin`` reached it as ``/admin``; absolute-form targets gave a 502.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.rollout_support import poll
from tests.harness import ProxyProcess, proxy_config, running_proxy
from tests.security.raw_backend import RawBackend, RawResponse, raw_backend, raw_exchange


@dataclass
class Setup:
    proxy: ProxyProcess
    rec: RawBackend
    other: RawBackend
    shadow: RawBackend


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with raw_backend(name="rec") as rec, raw_backend(name="other") as other, \
            raw_backend(name="shadow") as shadow:
        cfg = proxy_config({"rec": [rec.url], "other": [other.url], "shadow": [shadow.url]}, [
            {"name": "rec", "match": {"path_prefix": "/rec"}, "variants": {"a": "rec"},
             "split": {"weights": {"a": 1}}, "shadow": {"backend": "shadow"}},
            {"name": "rest", "match": {"path_prefix": "/"}, "variants": {"a": "other"},
             "split": {"weights": {"a": 1}}},
        ])
        async with running_proxy(tmp_path, cfg) as p:
            yield Setup(p, rec, other, shadow)


async def send(p: ProxyProcess, method: str, target: str, *headers: str,
               body: bytes = b"") -> RawResponse:
    head = "".join(f"{h}\r\n" for h in ("Host: models.internal", *headers,
                                         f"Content-Length: {len(body)}", "Connection: close"))
    return await raw_exchange(p.data_url,
                              f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode() + body)


def under_rec(target: str) -> bool:
    path = target.partition("?")[0]
    return path == "/rec" or path.startswith(("/rec/", "/rec:"))


async def test_dot_segments_never_leave_the_route_prefix(setup: Setup) -> None:
    p, rec, other = setup.proxy, setup.rec, setup.other
    # Climbing above "/" is refused outright.
    r = await send(p, "POST", "/rec/../../v2/repository/models/x/unload", body=b"{}")
    assert r.status == 400 and r.json()["error"] == "bad_target", r  # type: ignore[index]
    r = await send(p, "GET", "/rec/.%2e/.%2E/etc/passwd")
    assert r.status == 400
    # Encoded dot-segments are resolved *before* matching: /rec/%2e%2e/admin is /admin,
    # which is not the rec route's, and /admin is exactly what its own backend gets.
    for target, resolved in (("/rec/%2e%2e/admin", "/admin"), ("/rec/%2E%2E/x", "/x"),
                             ("/rec/a/.%2e/%2E%2e/y", "/y")):
        r = await send(p, "GET", target)
        assert r.status == 200 and r.json() == {"backend": "other", "target": resolved}, r
    # An encoded slash is never decoded, and a dot-segment hidden behind one is refused:
    # a backend that decodes %2F before resolving dots would read it as a way out.
    for target in ("/rec/a/..%2f..%2fadmin", "/rec/a/..%5Cadmin", "/rec/x%2F.%2F..%2F.."):
        r = await send(p, "GET", target)
        assert r.status == 400 and r.json()["error"] == "bad_target", (target, r)
    r = await send(p, "GET", "/rec/a/b%2fc")  # an encoded slash in a name passes, encoded
    assert r.status == 200 and r.json() == {"backend": "rec", "target": "/rec/a/b%2Fc"}
    assert rec.targets == ["/rec/a/b%2Fc"]
    assert other.targets == ["/admin", "/x", "/y"]
    assert all(under_rec(t) for t in rec.targets)


async def test_the_matched_string_is_the_sent_string(setup: Setup) -> None:
    p, rec = setup.proxy, setup.rec
    cases = {
        # dot-segments resolved, unreserved %7E decoded, the query kept verbatim
        "/rec/a/./b/../%7Ec?q=%2e%2e/../x&y=%2F": "/rec/a/~c?q=%2e%2e/../x&y=%2F",
        "/rec/m/%2fx%2Fy": "/rec/m/%2Fx%2Fy",
        "/rec//double//slash/": "/rec//double//slash/",
        "/rec:predict?": "/rec:predict",  # an empty query cannot be sent: dropped
    }
    for sent, expected in cases.items():
        r = await send(p, "POST", sent, body=b'{"x": 1}')
        assert r.status == 200, (sent, r)
        assert rec.seen[-1].target == expected, sent
        assert rec.seen[-1].body == b'{"x": 1}'


async def test_absolute_form_is_forwarded_in_origin_form(setup: Setup) -> None:
    p, rec, other = setup.proxy, setup.rec, setup.other
    r = await send(p, "POST", "http://models.example/rec/v1?x=1", body=b"{}")
    assert r.status == 200 and r.headers["x-splitway-variant"] == "a"
    assert rec.seen[-1].target == "/rec/v1?x=1"
    # RFC 9112 §3.2.2: the target's authority stands for the Host header
    assert rec.seen[-1].header("x-forwarded-host") == "models.example"
    r = await send(p, "GET", "HTTP://Models.Example:80/?q")
    assert r.status == 200 and other.seen[-1].target == "/?q"
    r = await send(p, "GET", "http://models.example")  # an empty path is "/"
    assert r.status == 200 and other.seen[-1].target == "/"
    r = await send(p, "OPTIONS", "*")  # asterisk-form: valid, for no route
    assert r.status == 404 and r.json()["error"] == "no_route"  # type: ignore[index]
    r = await send(p, "GET", "http://models.example/rec/%2e%2e/%2e%2e/x")
    assert r.status == 400


@pytest.mark.parametrize("target", [
    "/rec/a#fragment", "/rec/%zz", "/rec/%2", "/rec/..;/admin", "/rec/%2e;x/admin",
    "/rec/a\\..\\b", "ftp://models.example/rec", "http://user:pw@models.example/rec",
    "*", "http:///rec", "models.example:443",
])
async def test_bad_targets_are_refused_as_the_clients(setup: Setup, target: str) -> None:
    r = await send(setup.proxy, "GET", target)
    assert r.status == 400, r
    # bad_request: refused by the HTTP parser itself ("*" with GET, authority-form...)
    assert r.json()["error"] in ("bad_target", "bad_request"), r  # type: ignore[index]
    assert setup.rec.seen == [] and setup.other.seen == []


async def test_a_client_cannot_send_the_shadow_header_to_the_primary(setup: Setup) -> None:
    p, rec, shadow = setup.proxy, setup.rec, setup.shadow
    r = await send(p, "POST", "/rec/predict", "x-splitway-shadow: 1",
                   "X-Splitway-Shadow: 1", body=b"{}")
    assert r.status == 200
    assert rec.seen[-1].header("x-splitway-shadow") is None, rec.seen[-1].headers
    # ... while the mirror's own copy still carries it, on the same normalized target
    await poll(lambda: _ready(shadow), bool, timeout=10)
    assert shadow.seen[-1].header("x-splitway-shadow") == "1"
    assert shadow.seen[-1].target == "/rec/predict"


async def _ready(backend: RawBackend) -> bool:
    return bool(backend.seen)
