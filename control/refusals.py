"""Why an admin API call was refused, as one of a few named kinds.

:func:`control.auth.authorize` raises 401/403 errors; :func:`refusal_of` names which refusal
each one is, from what the caller sent, so the aggregated ``security.violation`` events
(:mod:`control.violations`) say *how* callers failed: no token at all, a token in the URL,
an Authorization header that is not ``Bearer TOKEN``, a token nobody holds, a role the
caller lacks, a write to a read-only API, or any call to a closed one. Every refusal is
counted under exactly one kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from control.auth import parse_bearer
from proxy.errors import ApiError, ForbiddenError, ReadOnlyError


class Refusal(StrEnum):
    """Why an admin call was refused: the ``kind`` of its ``security.violation``."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - no Authorization header (401)
    TOKEN_IN_QUERY = "token_in_query"  # noqa: S105 - no header, a token in the query (401)
    MALFORMED_AUTHORIZATION = "malformed_authorization"  # not "Bearer TOKEN" (401)
    BAD_TOKEN = "bad_token"  # noqa: S105 - a bearer token matching no entry (401)
    WRONG_ROLE = "wrong_role"  # a valid token without the operation's role (403)
    READ_ONLY = "read_only"  # a write without admin.tokens_file, on loopback (403)
    CLOSED_API = "closed_api"  # /api/v1 on a non-loopback listener without tokens (403)


#: query parameters a client might put a token in (never accepted: URLs end up in logs)
QUERY_TOKEN_PARAMS = frozenset({"token", "access_token"})

#: the 401's detail for each way of not presenting a valid token
UNAUTHORIZED_DETAIL: dict[Refusal, str] = {
    Refusal.MISSING_TOKEN: "a valid bearer token is required (Authorization: Bearer TOKEN)",
    Refusal.TOKEN_IN_QUERY: "tokens are not accepted in the query string: send "
                            "Authorization: Bearer TOKEN",
    Refusal.MALFORMED_AUTHORIZATION: "the Authorization header must be 'Bearer TOKEN'",
    Refusal.BAD_TOKEN: "a valid bearer token is required",
}


def refusal_of(error: ApiError, *, tokens_configured: bool, authorization: str | None,
               query: Iterable[str] = ()) -> Refusal:
    """Which refusal ``error`` (raised by :func:`authorize`) is, from what the caller
    sent: the Authorization header (``None`` when absent) and the query parameter names."""
    if isinstance(error, ReadOnlyError):
        return Refusal.READ_ONLY
    if isinstance(error, ForbiddenError):
        return Refusal.WRONG_ROLE if tokens_configured else Refusal.CLOSED_API
    if authorization is None:
        asked = {name.lower() for name in query}
        return Refusal.TOKEN_IN_QUERY if asked & QUERY_TOKEN_PARAMS else Refusal.MISSING_TOKEN
    if parse_bearer(authorization) is None:
        return Refusal.MALFORMED_AUTHORIZATION
    return Refusal.BAD_TOKEN
