"""The request target: what a client asked for -> the one string that is matched and sent.

:func:`normalize_target` is the only way from a request line's target (aiohttp's
``request.raw_path``, byte for byte as the client sent it) to the upstream target. Its result
is matched against the routes *and* sent to the backend unchanged, so no later step (the
HTTP client, a URL library) can make the backend see another path than the router did.
It is pure — no I/O, no aiohttp — so the data-path rewrite can reuse it as it is.

Forms (RFC 9112 §3.2):

* **origin-form** ``/path?query`` — the usual one;
* **absolute-form** ``http://host/path?query`` — accepted, as RFC 9112 §3.2.2 requires of
  every server, and reduced to origin-form (an empty path becomes ``/``); the authority is
  kept in :attr:`Target.authority`, which then stands for the Host header. Only ``http`` and
  ``https``; userinfo (``user@host``) is refused (RFC 9110 §4.2.4);
* **asterisk-form** ``*`` — only with ``OPTIONS``; it matches no route;
* anything else (authority-form ``host:port``, relative paths) is refused.

The path is put in normal form (RFC 3986 §6.2.2):

1. percent-encodings of *unreserved* characters (``A-Z a-z 0-9 - . _ ~``) are decoded —
   ``%2e`` and ``%2E`` are ``.``, ``%41`` is ``A``; every other percent-encoding stays
   encoded, with upper-case hex: ``%2f`` becomes ``%2F`` and is **never** decoded, nor is
   ``%25``, ``%3B`` or ``%00``. A ``%`` not followed by two hex digits is refused;
2. dot-segments (``.``, ``..``, including the ones step 1 produced from ``%2e``) are removed
   as RFC 3986 §5.2.4 says, except that a ``..`` that would climb above ``/`` is **refused**
   instead of being dropped silently (it can only be an attempt to leave a route);
3. a dot-segment with a path parameter (``..;x``, ``.;``) is refused: servers that strip
   ``;`` parameters (Tomcat, Jetty, Spring) would take it for ``..``;
4. a dot-segment hidden behind an encoded slash or backslash (``..%2F..%2Fadmin``,
   ``x%5C..``) is refused: a backend that decodes ``%2F`` before resolving dot-segments
   would otherwise read it as a way out of the route.

The query is kept verbatim (it is the backend's to parse); an empty one (``/a?``) is
dropped, since the HTTP client cannot send it. In the whole target, control
characters, white space, bytes outside ASCII and ``#`` (a fragment never belongs in a
request) are refused, and so is ``\\`` in the path (some servers treat it as ``/``).
Characters that carry no structure but that RFC 3986 would have percent-encoded
(``" < > ^ ` { | }``) pass through unchanged.

So the path of every :class:`Target` starts with ``/`` (or is ``*``), contains no
dot-segment and no decoded ``%2F``, and normalizing it again changes nothing. A route whose
``path_prefix`` it starts with on a segment boundary therefore serves a path *under* that
prefix for any backend that resolves paths as RFC 3986 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.errors import BadTargetError

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# RFC 3986 authority without userinfo: reg-name / IPv4 / [IP-literal], then :port.
_AUTHORITY_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{0,5})?")
_DOT_SEGMENTS = (".", "..")
_ENCODED_SLASH_RE = re.compile("%2F|%5C")  # upper-case: decode_unreserved upper-cases hex
# Anything but visible ASCII, and "#": one C-speed search per request (the message is built
# only on a hit).
_REFUSED_RE = re.compile(r"[^\x21-\x7e]|#")


@dataclass(frozen=True, slots=True)
class Target:
    """A normalized request target. ``path`` is what routes match; :attr:`path_qs` is what
    goes upstream (the same path, then the query as the client sent it)."""

    path: str
    query: str | None = None  # without the "?"; None when the target had none (or empty)
    authority: str | None = None  # host[:port] of an absolute-form target

    @property
    def path_qs(self) -> str:
        """The upstream request target (origin-form)."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


def normalize_target(method: str, raw: str) -> Target:
    """The normalized target of a request, or :class:`~proxy.errors.BadTargetError` (400).

    ``raw`` is the request line's target exactly as received (``request.raw_path``)."""
    _check_characters(raw)
    if raw == "*":
        if method.upper() != "OPTIONS":
            raise BadTargetError("the request target '*' is only for OPTIONS")
        return Target("*")
    authority: str | None = None
    rest = raw
    if not raw.startswith("/"):
        m = _SCHEME_RE.match(raw)
        if m is None:
            raise BadTargetError("the request target must be a path (/...) or an http(s) URL")
        if m.group(1).lower() not in ("http", "https"):
            raise BadTargetError(f"the request target's scheme {m.group(1)!r} is not http(s)")
        after = raw[m.end():]
        end = min((i for i in (after.find("/"), after.find("?")) if i >= 0), default=len(after))
        authority, rest = after[:end], after[end:]
        if "@" in authority:
            raise BadTargetError("the request target must not carry user information (user@)")
        if not _AUTHORITY_RE.fullmatch(authority):
            raise BadTargetError("the request target's host is missing or malformed")
        if not rest.startswith("/"):
            rest = "/" + rest  # http://host?q and http://host: the path is "/"
    path, _, query = rest.partition("?")
    if "\\" in path:
        raise BadTargetError("a backslash in the path is not allowed (write %5C)")
    # An empty query ("/a?") is dropped: the HTTP client cannot send one (yarl drops it),
    # and the string sent must be the string matched and returned here.
    return Target(normalize_path(path), query or None, authority)


def normalize_path(path: str) -> str:
    """An absolute path (starting with ``/``) in normal form: see the module docstring.

    Raises :class:`~proxy.errors.BadTargetError` for a bad percent-encoding, a ``..`` above
    the root or a dot-segment with a ``;`` parameter."""
    if not path.startswith("/"):
        raise BadTargetError("the path must start with '/'")
    decoded = decode_unreserved(path)
    if "%2F" in decoded or "%5C" in decoded:
        _refuse_hidden_dot_segments(decoded)
    if "/." not in decoded:
        return decoded  # no segment starts with ".": nothing to resolve (the common case)
    depth = 0
    # Empty segments count as a level, exactly as remove_dot_segments treats them.
    for segment in decoded.split("/")[1:]:
        name, semicolon, _ = segment.partition(";")
        if semicolon and name in _DOT_SEGMENTS:
            raise BadTargetError(f"the path segment {segment!r} is a dot-segment with a "
                                 "parameter")
        if segment == "..":
            if depth == 0:
                raise BadTargetError("the path climbs above '/' with '..'")
            depth -= 1
        elif segment != ".":
            depth += 1
    return remove_dot_segments(decoded)


def _refuse_hidden_dot_segments(path: str) -> None:
    """Refuse a dot-segment behind an encoded slash or backslash (``..%2F..%2Fadmin``).

    ``%2F`` is never decoded here, so to this proxy such a segment is an ordinary name; but
    a backend that decodes ``%2F`` (or ``%5C``) before resolving dot-segments would read it
    as a way out of the route's prefix. No model path needs one, so it is refused (Envoy's
    ``path_with_escaped_slashes_action: REJECT_REQUEST``, applied to dot-segments only)."""
    for segment in path.split("/"):
        parts = _ENCODED_SLASH_RE.split(segment)
        if len(parts) > 1 and any(p.partition(";")[0] in _DOT_SEGMENTS for p in parts):
            raise BadTargetError(f"the path segment {segment!r} hides a dot-segment behind "
                                 "an encoded slash")


def decode_unreserved(path: str) -> str:
    """Decode percent-encoded unreserved characters; upper-case the hex of the others.

    RFC 3986 §6.2.2.1 and §6.2.2.2. Raises :class:`~proxy.errors.BadTargetError` for a
    ``%`` that is not followed by two hex digits."""
    if "%" not in path:
        return path
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        pair = path[i + 1:i + 3]
        if len(pair) != 2 or not (pair[0] in _HEX and pair[1] in _HEX):
            raise BadTargetError("the path has a '%' that is not followed by two hex digits")
        char = chr(int(pair, 16))
        out.append(char if char in _UNRESERVED else "%" + pair.upper())
        i += 3
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, step by step as written there (above the root, ``..`` is dropped).

    :func:`normalize_path` refuses such a ``..`` before calling this."""
    inp, out = path, ""
    while inp:
        if inp.startswith("../"):  # A
            inp = inp[3:]
        elif inp.startswith(("./", "/./")):  # A, B
            inp = inp[2:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):  # C
            inp = inp[3:]
            out = out[:max(out.rfind("/"), 0)]
        elif inp == "/..":
            inp = "/"
            out = out[:max(out.rfind("/"), 0)]
        elif inp in (".", ".."):  # D
            inp = ""
        else:  # E: the first segment, with its leading "/" if any, moves to the output
            end = inp.find("/", 1)
            end = len(inp) if end < 0 else end
            out, inp = out + inp[:end], inp[end:]
    return out


def _check_characters(raw: str) -> None:
    m = _REFUSED_RE.search(raw)
    if m is None:
        return
    c = m.group()
    if c == "#":
        raise BadTargetError("the request target contains a fragment ('#')")
    o = ord(c)
    what = "white space" if c.isspace() else (
        "a control character" if o < 0x20 or o == 0x7F else "a non-ASCII character")
    raise BadTargetError(f"the request target contains {what} ({o:#04x})")
