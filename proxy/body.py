"""The client's request body on its way upstream: size limit, shadow copy, and whose
failure a broken upload is.

Reading the client's body can fail in ways that are the client's, never the backend's: it
closes the connection mid-body, sends a malformed chunked body, sends more than the route
allows, or stalls until the upstream timeout runs out. :class:`LimitedBody` remembers which
(see :meth:`LimitedBody.owns`), so the handler charges the client and not the variant
(:class:`proxy.errors.Cause`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from proxy.errors import (
    BadRequestError,
    BodyTooLargeError,
    ClientClosedError,
    ClientTimeoutError,
    ProxyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from proxy.mirror import Ticket

CHUNK = 1 << 16


def client_body_error(exc: BaseException) -> ProxyError:
    """The error for a failure reading the client's request body (always the client's)."""
    if isinstance(exc, HttpProcessingError):
        return BadRequestError(f"malformed request body: {exc.message}")
    return ClientClosedError("the client closed the connection while sending its body")


class LimitedBody:
    """Streams the client's body upstream, stopping at the route's size limit.

    ``failure`` keeps the client-caused error it raised (so the caller charges the client,
    not the backend); ``waiting`` is True while it waits for the client's next bytes — and
    stays True if the exchange is cut meanwhile: a timeout then is the client's stall."""

    __slots__ = ("_content", "_limit", "failure", "ticket", "waiting")

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.failure: ProxyError | None = None
        self.waiting = False
        self.ticket: Ticket | None = None  # a shadow copy is taken as the body streams

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            self.waiting = True
            try:
                chunk = await self._content.read(CHUNK)
            except (OSError, HttpProcessingError) as exc:
                self.failure = client_body_error(exc)
                raise self.failure from exc
            self.waiting = False
            if not chunk:
                break
            total += len(chunk)
            if total > self._limit:
                # Raising aborts the upstream request instead of ending it cleanly, so the
                # backend never takes a truncated body for a whole one.
                self.failure = BodyTooLargeError(f"request body over {self._limit} bytes")
                raise self.failure
            if self.ticket is not None:
                self.ticket.body.feed(chunk)
            yield chunk
        if self.ticket is not None:
            self.ticket.end_request()

    def owns(self, error: UpstreamError) -> ProxyError | None:
        """The client-caused error behind an upstream failure, if it was the client's."""
        if self.failure is not None:
            return self.failure
        if isinstance(error, UpstreamTimeoutError) and self.waiting:
            return ClientTimeoutError("the request body did not arrive before the upstream "
                                      "timeout")
        return None
