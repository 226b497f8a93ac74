"""splitway's own request headers never reach a backend — on any route, primary or shadow,
in any spelling. Through the real process, against backends that record the headers they
received.

Before the fix the trusted-pin secret header (``x-splitway-pin-secret`` or a route's own
``trusted_pins.header``) was dropped only on the route that configured it: sent to any
other route, it reached that route's backend and its shadow. And underscore spellings
passed everywhere — ``x_splitway_shadow: 1`` reached the primary, ``x_splitway_pin_secret``
the primary and the shadow — which WSGI/CGI backends read as the dashed names.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.rollout_support import poll
from tests.harness import ProxyProcess, proxy_config, running_proxy
from tests.security.raw_backend import RawBackend, Seen, raw_backend

SECRET = secrets.token_hex(16)
INTERNAL = {"x-splitway-variant", "x-splitway-shadow", "x-splitway-pin-secret", "x-pin-key"}


@dataclass
class Setup:
    proxy: ProxyProcess
    pinned: RawBackend  # route /pinned, variant "a" (trusted pins on x-pin-key)
    other: RawBackend  # route /pinned, variant "b"
    plain: RawBackend  # route /plain: no pins, a shadow
    shadow: RawBackend


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with raw_backend(name="pinned") as pinned, raw_backend(name="other") as other, \
            raw_backend(name="plain") as plain, raw_backend(name="shadow") as shadow:
        cfg = proxy_config(
            {"pinned": [pinned.url], "other": [other.url], "plain": [plain.url],
             "shadow": [shadow.url]}, [
                {"name": "pinned", "match": {"path_prefix": "/pinned"},
                 "variants": {"a": "pinned", "b": "other"},
                 "split": {"weights": {"a": 100, "b": 0}, "allow_pin": True,
                           "trusted_pins": {"header": "x-pin-key",
                                            "secret": "${SPLITWAY_PIN_SECRET}"}},
                 "shadow": {"backend": "shadow"}},
                {"name": "plain", "match": {"path_prefix": "/plain"},
                 "variants": {"a": "plain"}, "split": {"weights": {"a": 1}},
                 "shadow": {"backend": "shadow"}},
            ])
        async with running_proxy(tmp_path, cfg, env={"SPLITWAY_PIN_SECRET": SECRET}) as p:
            yield Setup(p, pinned, other, plain, shadow)


def internal(seen: Seen) -> list[str]:
    """The internal headers a backend received, in whatever spelling they came."""
    return [name for name, _ in seen.headers
            if name.lower().replace("_", "-") in INTERNAL]


# Every internal name in every spelling a client might try, with an ordinary header in
# the same spelling (which must still pass: only splitway's own names are dropped).
SENT = {
    "x-splitway-pin-secret": SECRET, "x_splitway_pin_secret": SECRET,
    "X_Splitway_Pin-Secret": SECRET, "x-pin-key": SECRET, "x_pin_key": SECRET,
    "x_splitway_shadow": "1", "X-Splitway_Shadow": "1", "x_splitway_variant": "b",
    "x_custom_header": "kept", "x-other": "kept",
}


async def post(setup: Setup, path: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(
            setup.proxy.data_url + path, json={}, headers=headers) as r:
        await r.read()
        return r.status, r.headers["x-splitway-variant"]


async def shadowed(setup: Setup, n: int) -> list[Seen]:
    return list(await poll(lambda: _seen(setup.shadow),
                           lambda seen: len(seen) >= n, timeout=10))


async def _seen(backend: RawBackend) -> list[Seen]:
    return backend.seen


async def test_no_internal_header_reaches_a_backend_in_any_spelling(setup: Setup) -> None:
    # A route without trusted_pins: the default and the other route's secret header names
    # are dropped too, in every spelling, to the primary and to the shadow.
    assert await post(setup, "/plain/p", SENT) == (200, "a")
    # The route that names x-pin-key: same.
    assert await post(setup, "/pinned/p", SENT) == (200, "a")
    primaries = [setup.plain.seen[-1], setup.pinned.seen[-1]]
    mirrored = await shadowed(setup, 2)
    for seen in primaries:
        assert internal(seen) == [], seen.headers
    for seen in mirrored:
        # ... the mirror's own x-splitway-shadow, exactly once, and nothing else of ours
        assert internal(seen) == ["x-splitway-shadow"], seen.headers
        assert seen.header("x-splitway-shadow") == "1"
    for seen in [*primaries, *mirrored]:
        assert seen.header("x_custom_header") == "kept" and seen.header("x-other") == "kept"


async def test_only_the_exact_pin_header_pins(setup: Setup) -> None:
    """``x_splitway_variant`` is not a pin, and is dropped upstream; the exact
    ``x-splitway-variant`` is, and is dropped upstream too."""
    assert await post(setup, "/pinned/p", {"x_splitway_variant": "b"}) == (200, "a")
    assert internal(setup.pinned.seen[-1]) == [], setup.pinned.seen[-1].headers
    assert await post(setup, "/pinned/p", {"x-splitway-variant": "b"}) == (200, "b")
    assert internal(setup.other.seen[-1]) == [], setup.other.seen[-1].headers
