"""splitway's error tree, and the one place that maps errors to HTTP statuses.

::

    SplitwayError
    ├── ConfigError                  bad config file (list of ConfigProblem); CLI exit 2
    ├── ProxyError                   data-plane request failures, answered as JSON
    │   ├── NoRouteError             404  no route matches
    │   ├── BadPinError              400  x-splitway-variant names no variant
    │   ├── BadRequestError          400  malformed request
    │   ├── BodyTooLargeError        413  request body over the route's max_body_bytes
    │   └── UpstreamError            the backend failed; ``reason`` is a metric label
    │       ├── UpstreamConnectError 502  refused / unreachable   (reason "connect")
    │       ├── UpstreamResetError   502  reset / closed mid-way  (reason "reset")
    │       └── UpstreamTimeoutError 504  connect or total timeout (reason "timeout")
    ├── ApiError                     admin API failures, answered as JSON
    │   ├── UnauthorizedError        401
    │   ├── ForbiddenError           403
    │   ├── NotFoundError            404
    │   ├── ConflictError            409
    │   ├── InvalidInputError        422  (``field`` names the bad input)
    │   └── ReadOnlyError            403  admin API without tokens_file refuses writes
    └── StoreError                   the state store failed (500 at the API edge)
        └── StoreUnavailableError    503  the store cannot be reached (connection refused or
                                          lost, pool exhausted, database locked); answered
                                          with ``Retry-After`` (see :func:`headers_of`)

aiohttp and OS errors are wrapped where they happen (``raise UpstreamConnectError(...) from
exc``); :func:`status_of` is the only status mapping, :func:`error_body` the one JSON
shape (contract §4) and :func:`headers_of` the headers that go with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

UpstreamReason = Literal["connect", "timeout", "reset"]


class SplitwayError(Exception):
    """Base of every error splitway raises on purpose."""

    kind = "internal"
    status = 500
    #: seconds a client should wait before retrying (``Retry-After``); None: no header
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(SplitwayError):
    kind = "config"

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


class ProxyError(SplitwayError):
    pass


class NoRouteError(ProxyError):
    kind, status = "no_route", 404


class BadPinError(ProxyError):
    kind, status = "bad_pin", 400


class BadRequestError(ProxyError):
    kind, status = "bad_request", 400


class BodyTooLargeError(ProxyError):
    kind, status = "body_too_large", 413


class UpstreamError(ProxyError):
    kind, status = "upstream", 502
    reason: ClassVar[UpstreamReason] = "reset"


class UpstreamConnectError(UpstreamError):
    kind, status = "upstream_connect", 502
    reason: ClassVar[UpstreamReason] = "connect"


class UpstreamResetError(UpstreamError):
    kind, status = "upstream_reset", 502
    reason: ClassVar[UpstreamReason] = "reset"


class UpstreamTimeoutError(UpstreamError):
    kind, status = "upstream_timeout", 504
    reason: ClassVar[UpstreamReason] = "timeout"


class ApiError(SplitwayError):
    kind, status = "bad_request", 400

    def __init__(self, detail: str = "", field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class UnauthorizedError(ApiError):
    kind, status = "unauthorized", 401


class ForbiddenError(ApiError):
    kind, status = "forbidden", 403


class ReadOnlyError(ApiError):
    kind, status = "read_only", 403


class NotFoundError(ApiError):
    kind, status = "not_found", 404


class ConflictError(ApiError):
    kind, status = "conflict", 409


class InvalidInputError(ApiError):
    kind, status = "invalid", 422


class StoreError(SplitwayError):
    kind, status = "store", 500


class StoreUnavailableError(StoreError):
    """The store is away for now (not a bad query): the request may succeed later."""

    kind, status = "store_unavailable", 503
    retry_after_s: ClassVar[int | None] = 5


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error (500 for anything not ours)."""
    return exc.status if isinstance(exc, SplitwayError) else 500


def headers_of(exc: BaseException) -> dict[str, str]:
    """Extra response headers for an error: ``Retry-After`` when it is worth retrying."""
    retry = exc.retry_after_s if isinstance(exc, SplitwayError) else None
    return {"Retry-After": str(retry)} if retry is not None else {}


def error_body(
    exc: BaseException,
    *,
    request_id: str | None,
    route: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """The JSON error shape of contract §4 (admin errors add ``field`` when known)."""
    if isinstance(exc, SplitwayError):
        kind, detail = exc.kind, exc.detail
    else:
        kind, detail = "internal", "internal error"
    body: dict[str, Any] = {
        "error": kind,
        "detail": detail,
        "route": route,
        "variant": variant,
        "request_id": request_id,
    }
    if isinstance(exc, ApiError) and exc.field is not None:
        body["field"] = exc.field
    return body
