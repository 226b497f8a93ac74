"""The client's request body on its way upstream: size limit, shadow copy, and whose
failure a broken upload is.

Reading the client's body can fail in ways that are the client's, never the backend's: it
closes the connection mid-body, sends a malformed chunked body, sends more than the route
allows, or stalls. :class:`LimitedBody` remembers which (see :meth:`LimitedBody.owns`), so
the handler charges the client and not the variant (:class:`proxy.errors.Cause`).

A stall is bounded by ``limits.body_read_timeout_s`` (:class:`proxy.config.Limits`): the
longest wait for the *next* piece of the body, like nginx's ``client_body_timeout`` — a
slow upload that keeps sending is fine, a silent one is answered 408 ``client_timeout``.
Both ways of reading a body apply it: :func:`read_small` (a small body read whole before
the upstream exchange, where no upstream timeout runs yet) and each chunk of
:class:`LimitedBody`.
"""

from __future__ import annotations

import asyncio
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


def body_timeout_error(timeout_s: float) -> ClientTimeoutError:
    return ClientTimeoutError(f"no piece of the request body arrived for {timeout_s:g}s")


async def _next_piece(content: aiohttp.StreamReader, size: int, timeout_s: float) -> bytes:
    """The next bytes of the body (b"" at its end), or the client's error."""
    try:
        async with asyncio.timeout(timeout_s):
            return await content.read(size)
    except TimeoutError:
        raise body_timeout_error(timeout_s) from None
    except (OSError, HttpProcessingError) as exc:
        raise client_body_error(exc) from exc


async def read_small(content: aiohttp.StreamReader, timeout_s: float) -> bytes:
    """Read a small body whole, waiting at most ``timeout_s`` for each piece; raises the
    client's :class:`~proxy.errors.ProxyError` (408, 400 or 499) if it does not come."""
    parts: list[bytes] = []
    while chunk := await _next_piece(content, CHUNK, timeout_s):
        parts.append(chunk)
    return b"".join(parts)


class LimitedBody:
    """Streams the client's body upstream, stopping at the route's size limit and at a
    wait of ``timeout_s`` for any one chunk.

    ``failure`` keeps the client-caused error it raised (so the caller charges the client,
    not the backend); ``waiting`` is True while it waits for the client's next bytes — and
    stays True if the exchange is cut meanwhile: a timeout then is the client's stall."""

    __slots__ = ("_content", "_limit", "_timeout_s", "failure", "ticket", "waiting")

    def __init__(self, content: aiohttp.StreamReader, limit: int, timeout_s: float) -> None:
        self._content = content
        self._limit = limit
        self._timeout_s = timeout_s
        self.failure: ProxyError | None = None
        self.waiting = False
        self.ticket: Ticket | None = None  # a shadow copy is taken as the body streams

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            self.waiting = True
            try:
                chunk = await _next_piece(self._content, CHUNK, self._timeout_s)
            except ProxyError as exc:
                self.failure = exc
                raise
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
