"""Header rewriting for the forwarding path (pure functions over header lists).

RFC 9110 §7.6.1: hop-by-hop headers, and every header named in ``Connection``, belong to
one connection and are never forwarded. ``x-forwarded-*`` are appended, never replaced, so
a chain of proxies keeps the whole path.

splitway's own request headers are not forwarded either: ``x-splitway-variant`` (a pin is
for the proxy), ``x-splitway-shadow`` (only the mirror sets it, on its own copy; a client
must not make a primary request look like a shadow one) and a route's trusted-pin secret
header (passed in ``drop``).
"""

from __future__ import annotations

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
_REQUEST_DROP = HOP_BY_HOP | {"host", VARIANT_HEADER, SHADOW_HEADER}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


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
    drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """Headers to send upstream: hop-by-hop, ``Host`` and splitway's own dropped,
    forwarding appended.

    ``Host`` is left to the client library (the backend's own authority), and the client's
    host travels in ``x-forwarded-host`` — what a model server behind a sidecar expects.
    ``host`` overrides the ``Host`` header for that (the authority of an absolute-form
    target, RFC 9112 §3.2.2); ``drop`` names more headers (lower case) to leave out.
    """
    drop = _REQUEST_DROP | drop if drop else _REQUEST_DROP
    if "connection" in incoming:
        drop = drop | _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in incoming.items() if k.lower() not in drop
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
