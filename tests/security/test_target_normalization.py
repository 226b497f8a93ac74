"""The request-target function (:mod:`proxy.target`): RFC tables and a hypothesis fuzz.

The fuzz asserts, for any generated target, that the result is a refusal
(:class:`BadTargetError`) or a :class:`Target` whose path

* is what the router matches *and* what the HTTP client puts on the wire (the URL the
  upstream pool builds, ``yarl.URL(..., encoded=True)``, gives back the same string);
* starts with ``/``, holds no dot-segment (plain, percent-encoded, or with a ``;``
  parameter) and no decoded ``%2F`` — so a backend resolving it per RFC 3986 gets exactly
  this path, and a path that starts with a route's prefix on a segment boundary stays
  under that prefix;
* is a fixed point: normalizing it again changes nothing.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from proxy.config import RouteConfig
from proxy.errors import BadTargetError
from proxy.routing import Router
from proxy.target import Target, normalize_path, normalize_target, remove_dot_segments

# --- RFC 3986 tables --------------------------------------------------------------------

# §5.2.4's own examples.
REMOVE_DOT_SEGMENTS = [("/a/b/c/./../../g", "/a/g"), ("mid/content=5/../6", "mid/6")]

# §5.4 with base "http://a/b/c/d;p?q": the reference's path merged with the base's
# (§5.2.3: "/b/c/" + reference, or the reference itself when it starts with "/"),
# then remove_dot_segments. Only path references (no scheme, authority, query, fragment).
BASE_DIR = "/b/c/"
RFC_5_4 = [
    # 5.4.1 normal examples
    ("g", "/b/c/g"), ("./g", "/b/c/g"), ("g/", "/b/c/g/"), ("/g", "/g"), (";x", "/b/c/;x"),
    ("g;x", "/b/c/g;x"), (".", "/b/c/"), ("./", "/b/c/"), ("..", "/b/"), ("../", "/b/"),
    ("../g", "/b/g"), ("../..", "/"), ("../../", "/"), ("../../g", "/g"),
    # 5.4.2 abnormal examples
    ("../../../g", "/g"), ("../../../../g", "/g"), ("/./g", "/g"), ("/../g", "/g"),
    ("g.", "/b/c/g."), (".g", "/b/c/.g"), ("g..", "/b/c/g.."), ("..g", "/b/c/..g"),
    ("./../g", "/b/g"), ("./g/.", "/b/c/g/"), ("g/./h", "/b/c/g/h"), ("g/../h", "/b/c/h"),
    ("g;x=1/./y", "/b/c/g;x=1/y"), ("g;x=1/../y", "/b/c/y"),
]
# The references above whose resolution climbs above "/": RFC 3986 drops such a "..";
# normalize_path refuses it (it can only be an attempt to leave a route).
CLIMBS = {"../../../g", "../../../../g", "/../g"}


def merged(ref: str) -> str:
    return ref if ref.startswith("/") else BASE_DIR + ref


@pytest.mark.parametrize(("path", "expected"), REMOVE_DOT_SEGMENTS)
def test_remove_dot_segments_rfc_examples(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize(("ref", "expected"), RFC_5_4)
def test_rfc_3986_reference_resolution_examples(ref: str, expected: str) -> None:
    assert remove_dot_segments(merged(ref)) == expected
    if ref in CLIMBS:
        with pytest.raises(BadTargetError, match="climbs above"):
            normalize_path(merged(ref))
    else:
        assert normalize_path(merged(ref)) == expected


@pytest.mark.parametrize(("method", "raw", "expected"), [
    ("GET", "/", Target("/")),
    ("GET", "/rec/%2e%2e/admin", Target("/admin")),
    ("GET", "/rec/%2E%2E/x", Target("/x")),
    ("GET", "/rec/.%2e/x", Target("/x")),
    ("GET", "/rec/a/b%2fc%2F", Target("/rec/a/b%2Fc%2F")),
    ("GET", "/%41%7a%7E%2d%5f%2E/%25%2f%3b%00", Target("/Az~-_./%25%2F%3B%00")),
    ("GET", "/a?q=%2e%2e/../x&b=%zz", Target("/a", "q=%2e%2e/../x&b=%zz")),
    ("GET", "/a?", Target("/a")),
    ("GET", "/a??", Target("/a", "?")),
    ("GET", "//x//y/", Target("//x//y/")),
    ("POST", "http://x/v1/models/m:predict?a=1", Target("/v1/models/m:predict", "a=1", "x")),
    ("POST", "HTTPS://X.example:8443", Target("/", None, "X.example:8443")),
    ("GET", "http://x?q", Target("/", "q", "x")),
    ("GET", "http://[::1]:80/a/./b", Target("/a/b", None, "[::1]:80")),
    ("OPTIONS", "*", Target("*")),
    ("GET", "/{a}|^`\"<>", Target("/{a}|^`\"<>")),
])
def test_targets(method: str, raw: str, expected: Target) -> None:
    assert normalize_target(method, raw) == expected
    assert normalize_target(method, expected.path_qs).path_qs == expected.path_qs


@pytest.mark.parametrize(("method", "raw", "why"), [
    ("GET", "/rec/../../v2/repository/models/x/unload", "climbs above"),
    ("GET", "/..", "climbs above"),
    ("GET", "/a/%2e%2e/%2E%2E", "climbs above"),
    ("GET", "/a/..;/b", "dot-segment with a parameter"),
    ("GET", "/a/%2e;jsessionid=1/b", "dot-segment with a parameter"),
    ("GET", "/rec/a/..%2f..%2fadmin", "hides a dot-segment"),
    ("GET", "/rec/a/%2e%2e%2fb", "hides a dot-segment"),
    ("GET", "/rec/x%2F.", "hides a dot-segment"),
    ("GET", "/rec/..%5c", "hides a dot-segment"),
    ("GET", "/rec/a%2F..;x", "hides a dot-segment"),
    ("GET", "/a%", "two hex digits"),
    ("GET", "/a%2", "two hex digits"),
    ("GET", "/a%g0", "two hex digits"),
    ("GET", "/a#f", "fragment"),
    ("GET", "/a?b#f", "fragment"),
    ("GET", "/a b", "white space"),
    ("GET", "/a\tb", "white space"),
    ("GET", "/a\x00b", "control character"),
    ("GET", "/a\x7fb", "control character"),
    ("GET", "/é", "non-ASCII"),
    ("GET", "/a\\b", "backslash"),
    ("GET", "*", "only for OPTIONS"),
    ("GET", "", "must be a path"),
    ("GET", "a/b", "must be a path"),
    ("CONNECT", "example.com:443", "must be a path"),
    ("GET", "ftp://x/a", "not http"),
    ("GET", "http://u:p@x/a", "user information"),
    ("GET", "http:///a", "host is missing"),
    ("GET", "http://x y/a", "white space"),
])
def test_refused_targets(method: str, raw: str, why: str) -> None:
    with pytest.raises(BadTargetError, match=why) as info:
        normalize_target(method, raw)
    assert info.value.status == 400 and info.value.kind == "bad_target"


# --- the fuzz ---------------------------------------------------------------------------

PIECES = ["a", "b", "rec", "v1", "", ".", "..", "%2e", "%2E", ".%2e", "%2e.", "%2E%2e",
          "%2f", "%2F", "..%2f", "%25", "%252e", "%", "%z", "%5C", "%3b", ";", ";x", "..;",
          ".;", "%2e;", "~", "%7e", "%41", ":", ":predict", "@", "=", "+", "!", "*", "'"]
segment = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=3).map("".join),
    st.text(st.characters(codec="latin-1"), max_size=4),  # control, space, #, ?, non-ASCII
)
query = st.one_of(st.none(), st.text(st.sampled_from("ab=&%2e./?;#"), max_size=8))
authority = st.sampled_from(["", "http://x", "HTTP://x.example:8080", "https://[::1]",
                             "http://", "ftp://x", "http://u@x"])


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "/".join(draw(st.lists(segment, max_size=8)))
    q = draw(query)
    raw = draw(authority) + path + ("" if q is None else "?" + q)
    return raw if draw(st.integers(0, 20)) else draw(st.sampled_from(["*", "x/y", ""]))


PREFIXES = ["/rec", "/rec/", "/v1/models/a", "/"]
ROUTER = Router.compile([RouteConfig.model_validate(
    {"name": f"r{i}", "match": {"path_prefix": p}, "variants": {"v": "b"},
     "split": {"weights": {"v": 1}}}) for i, p in enumerate(PREFIXES)])
PCT = re.compile(r"%(..)")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def decode_unreserved(path: str) -> str:
    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in UNRESERVED else "%" + m.group(1).upper()
    return PCT.sub(one, path)


def resolve_independently(path: str) -> str:
    """RFC 3986 resolution by a segment stack (not the RFC's buffer loop), for a path
    without ``..`` above the root: a cross-check of :func:`remove_dot_segments`."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


@settings(max_examples=3000, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "OPTIONS"]), raw=targets())
@example(method="POST", raw="/rec/../../v2/repository/models/x/unload")
@example(method="GET", raw="/rec/%2e%2e/admin")
@example(method="GET", raw="/rec/a/..%2f..%2fadmin")
@example(method="GET", raw="/rec/a/b%2F...%2Fc")
@example(method="POST", raw="http://x/rec/v1?q=1")
def test_fuzz_normalized_targets(method: str, raw: str) -> None:
    try:
        t = normalize_target(method, raw)
    except BadTargetError:
        return
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F or c == "#" for c in raw):
        pytest.fail(f"{raw!r} has bytes that must be refused")
    if t.path == "*":
        assert raw == "*" and method == "OPTIONS" and t.query is None
        return
    # (a) what the router sees is what the HTTP client sends, byte for byte
    url = URL("http://127.0.0.1:9" + t.path_qs, encoded=True)
    assert url.raw_path_qs == t.path_qs and url.raw_path == t.path
    # (b) an absolute path in normal form: no dot-segment of any spelling, no decoded %2F
    assert t.path.startswith("/")
    for seg in t.path.split("/")[1:]:
        assert seg.partition(";")[0] not in (".", ".."), (raw, t)
        # nor behind an encoded slash or backslash, for backends that decode them first
        for part in re.split("%2F|%5C", seg):
            assert part.partition(";")[0] not in (".", ".."), (raw, t)
    for hexpair in PCT.findall(t.path):
        assert hexpair == hexpair.upper(), (raw, t)
        assert chr(int(hexpair, 16)) not in UNRESERVED, (raw, t)  # %2E, %41 ... decoded
    assert "\\" not in t.path
    assert resolve_independently(t.path) == t.path == remove_dot_segments(t.path)
    # ... so a route whose prefix the path starts with serves a path under that prefix
    matched = ROUTER.match(method, None, t.path, {})
    assert matched is not None
    prefix = matched.match.path_prefix
    assert t.path.startswith(prefix)
    assert prefix.endswith("/") or len(t.path) == len(prefix) or t.path[len(prefix)] in "/:"
    # (c) idempotent
    again = normalize_target(method, t.path_qs)
    assert (again.path, again.query) == (t.path, t.query)
    # the query is the client's, verbatim (an empty one cannot be sent, so it is dropped)
    after_path = raw.partition("?")[2] if "?" in raw else None
    assert t.query == (after_path or None)


@settings(max_examples=1000, deadline=None)
@given(raw=targets())
def test_fuzz_dot_segments_are_resolved_as_rfc_3986_says(raw: str) -> None:
    """Whatever is not refused resolves as RFC 3986 resolves the same path with its
    encoded dots decoded; whatever climbs above the root is refused, never clamped."""
    if not raw.startswith("/"):
        return
    path = raw.partition("?")[0]
    try:
        t = normalize_target("GET", raw)
    except BadTargetError:
        return
    assert resolve_independently(decode_unreserved(path)) == t.path
