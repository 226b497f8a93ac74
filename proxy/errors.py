"""splitway's error tree, and the one place that maps errors to HTTP statuses.

::

    SplitwayError
    ├── ConfigError                  bad config file (list of ConfigProblem); CLI exit 2
    ├── ProxyError                   data-plane request failures, answered as JSON;
    │   │                                ``cause`` says whose failure it is (below)
    │   ├── NoRouteError             404  no route matches                        client
    │   ├── BadPinError              400  x-splitway-variant names no variant     client
    │   ├── BadRequestError          400  malformed request (or request body)     client
    │   │   └── BadTargetError       400  request target refused (proxy.target)   client
    │   ├── BodyTooLargeError        413  request body over the route's limit     client
    │   ├── ClientClosedError        499  the client went away (nginx's code)     client
    │   ├── ClientTimeoutError       408  the request's headers or body stalled    client
    │   │                                 (limits.header_read_timeout_s,
    │   │                                 limits.body_read_timeout_s, or the
    │   │                                 upstream timeout ran out meanwhile)
    │   ├── OverloadedError          503  the route's max_concurrency is reached; proxy
    │   │                                 ``Retry-After: 1``
    │   └── UpstreamError            the backend failed; ``reason`` is a metric label
    │       ├── UpstreamConnectError 502  refused / unreachable   (reason "connect")  backend
    │       ├── UpstreamResetError   502  reset / closed mid-way  (reason "reset")    backend
    │       └── UpstreamTimeoutError 504  connect or total timeout (reason "timeout") backend
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

Whose failure: :class:`Cause`
-----------------------------

Every data-plane outcome is recorded with its :class:`Cause` (``VariantStats.record`` takes
it as an argument; nothing guesses it from the status code):

* ``BACKEND`` — the backend answered (with whatever status: a backend's 500 is its own), or
  failed: connect refused, reset, timeout (the :class:`UpstreamError` family). Only these
  outcomes reach what judges a variant: the rollout judge's windows, experiment counts and,
  for connect failures and 5xx answers, outlier ejection.
* ``CLIENT`` — the client caused it: a bad target, a bad pin, a malformed request or body, a
  body over the limit, a client that closed the connection (mid-body too) or stalled its
  body. Counted in ``splitway_requests_total`` with its real status class, never charged
  to the variant.
* ``PROXY`` — the proxy refused on its own account (``OverloadedError``: the route's
  concurrency limit) or failed itself (an internal error). Not charged to the variant
  either: the refusal happens before a variant is chosen.

:func:`cause_of` maps any exception to its cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
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


class Cause(Enum):
    """Whose failure an outcome is (see the module docstring); only ``BACKEND`` outcomes
    are charged to a variant."""

    CLIENT = "client"
    PROXY = "proxy"
    BACKEND = "backend"

    @property
    def charged(self) -> bool:
        """Whether the outcome counts for or against the variant that was chosen."""
        return self is Cause.BACKEND


class ProxyError(SplitwayError):
    cause: ClassVar[Cause] = Cause.CLIENT


class NoRouteError(ProxyError):
    kind, status = "no_route", 404


class BadPinError(ProxyError):
    kind, status = "bad_pin", 400


class BadRequestError(ProxyError):
    kind, status = "bad_request", 400


class BadTargetError(BadRequestError):
    """The request target cannot be served as it is (see :mod:`proxy.target`)."""

    kind = "bad_target"


class BodyTooLargeError(ProxyError):
    kind, status = "body_too_large", 413


class ClientClosedError(ProxyError):
    """The client closed its connection before the exchange was over."""

    kind, status = "client_closed", 499


class ClientTimeoutError(ProxyError):
    """The client was too slow: its headers were not complete within
    ``limits.header_read_timeout_s``, no next piece of its body came within
    ``limits.body_read_timeout_s``, or the upstream timeout ran out while the proxy was
    still waiting for its body. The client's doing, not the backend's."""

    kind, status = "client_timeout", 408


class OverloadedError(ProxyError):
    """The route has ``max_concurrency`` requests in flight; refused at once, not queued."""

    kind, status = "overloaded", 503
    cause: ClassVar[Cause] = Cause.PROXY
    retry_after_s: ClassVar[int | None] = 1


class UpstreamError(ProxyError):
    """``detail`` names the backend only; ``internal`` (endpoint URL, OS error) is for the
    log and never reaches a response body."""

    kind, status = "upstream", 502
    reason: ClassVar[UpstreamReason] = "reset"
    cause: ClassVar[Cause] = Cause.BACKEND

    def __init__(self, detail: str = "", internal: str = "") -> None:
        super().__init__(detail)
        self.internal = internal


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


def cause_of(exc: BaseException) -> Cause:
    """Whose failure ``exc`` is: a data-plane error's own cause; ``PROXY`` for anything
    else (an error of ours, never the variant's)."""
    return exc.cause if isinstance(exc, ProxyError) else Cause.PROXY


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
