"""Header rewriting for the forwarding path (pure functions over header lists).

RFC 9110 §7.6.1: hop-by-hop headers, and every header named in ``Connection``, belong to
one connection and are never forwarded. ``x-forwarded-*`` are appended, never replaced, so
a chain of proxies keeps the whole path.

splitway's own request headers are not forwarded either, on any route, to the primary or
the shadow: ``x-splitway-variant`` (a pin is for the proxy), ``x-splitway-shadow`` (only
the mirror sets it, on its own copy; a client must not make a primary request look like a
shadow one) and every trusted-pin secret header — the default ``x-splitway-pin-secret`` and
each ``split.trusted_pins.header`` of any route (:func:`internal_headers`, built once per
runtime). They are matched in **any spelling**: a name is compared lower-cased with ``_``
read as ``-`` (:func:`header_key`), because WSGI/CGI backends read ``x_splitway_shadow`` as
``X-Splitway-Shadow``. Only the exact names have a meaning to splitway itself (a pin is
``x-splitway-variant``, never ``x_splitway_variant``).

The client's ``x-request-id`` is kept only when it is short and plain
(:func:`request_id_of`); otherwise the proxy makes one, sends it upstream and echoes it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
VARIANT_HEADER = "x-splitway-variant"
REQUEST_ID_HEADER = "x-request-id"
SHADOW_HEADER = "x-splitway-shadow"
# split.trusted_pins.header's default (a header name, not a secret)
PIN_SECRET_HEADER = "x-splitway-pin-secret"  # noqa: S105
INTERNAL_HEADERS = frozenset({VARIANT_HEADER, SHADOW_HEADER, PIN_SECRET_HEADER})
_REQUEST_DROP = HOP_BY_HOP | {"host"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}
#: a client's request id is kept only if it is this short and plain (log- and key-safe)
REQUEST_ID_MAX_CHARS = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")


def request_id_of(incoming: Mapping[str, str] | CIMultiDictProxy[str]) -> str:
    """The client's ``x-request-id`` if it has 1-128 characters of ``A-Z a-z 0-9 . _ : -``;
    otherwise (absent, too long, anything else in it) a new random one (32 hex digits).
    Ids are kept in memory for an hour (the experiment events' request-id map), so their
    size is the client's to choose only within this bound."""
    given = incoming.get(REQUEST_ID_HEADER)
    if given is not None and len(given) <= REQUEST_ID_MAX_CHARS and _REQUEST_ID.fullmatch(
            given):
        return given
    return os.urandom(16).hex()


def header_key(name: str) -> str:
    """A header name as internal names are compared: lower case, ``_`` read as ``-``."""
    return name.lower().replace("_", "-")


def internal_headers(pin_secret_headers: Iterable[str] = ()) -> frozenset[str]:
    """splitway's own request header names (each a :func:`header_key`), with the given
    trusted-pin secret header names: never sent upstream."""
    return INTERNAL_HEADERS | {header_key(n) for n in pin_secret_headers}


def _connection_tokens(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> frozenset[str]:
    values: Iterable[str]
    values = headers.getall("connection", ()) if hasattr(headers, "getall") else (
        [headers["connection"]] if "connection" in headers else []
    )
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    client_ip: str | None,
    scheme: str,
    request_id: str,
    host: str | None = None,
    internal: frozenset[str] = INTERNAL_HEADERS,
) -> CIMultiDict[str]:
    """Headers to send upstream: hop-by-hop, ``Host`` and splitway's own dropped,
    forwarding appended.

    ``Host`` is left to the client library (the backend's own authority), and the client's
    host travels in ``x-forwarded-host`` — what a model server behind a sidecar expects.
    ``host`` overrides the ``Host`` header for that (the authority of an absolute-form
    target, RFC 9112 §3.2.2); ``internal`` is the runtime's :func:`internal_headers`,
    dropped in any spelling.
    """
    drop = _REQUEST_DROP
    if "connection" in incoming:
        drop = drop | _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in incoming.items()
        if k.lower() not in drop and header_key(k) not in internal
    )
    host = host if host is not None else incoming.get("host")
    for name, value in (("x-forwarded-for", client_ip), ("x-forwarded-proto", scheme),
                        ("x-forwarded-host", host)):
        if value:
            prior = incoming.get(name)
            out[name] = f"{prior}, {value}" if prior else value
    out[REQUEST_ID_HEADER] = request_id
    return out


def downstream_response_headers(
    upstream: CIMultiDictProxy[str], *, variant: str, request_id: str
) -> CIMultiDict[str]:
    """Headers to send to the client: hop-by-hop dropped, variant and request id added."""
    drop = _RESPONSE_DROP if "connection" not in upstream else (
        _RESPONSE_DROP | _connection_tokens(upstream))
    out: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in upstream.items() if k.lower() not in drop
    )
    out[VARIANT_HEADER] = variant
    out[REQUEST_ID_HEADER] = request_id
    return out
