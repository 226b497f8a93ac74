"""Client connections with limits, on the data and the admin listener alike.

aiohttp's HTTP/1 server bounds each header line and the number of headers, and closes a
keep-alive connection idle for ``keepalive_timeout`` — but it has no deadline for a request's
headers, so a connection that sends nothing, or one header byte every few seconds, was held
for good. :class:`GuardedRequestHandler` (the protocol each connection runs) adds, from
``limits:`` in the config (:class:`proxy.config.Limits`):

- **header read timeout** — a request's headers must be complete within
  ``header_read_timeout_s``, counted from the connection's start for its first request and
  from the first byte of each later (keep-alive) request — or, when those bytes came while
  earlier requests were still being answered (pipelining, also in the same read as the
  request before: :func:`pipelined_rest`), from when the last of those answers was sent,
  as nginx does; the idle time between requests is ``keepalive_timeout_s``'s. On expiry
  the connection is closed, after a JSON 408 if part of a request had arrived, silently if
  nothing had (an unsolicited 408 on a connection the client may be about to reuse would
  read as the answer to its next request). Like Node's ``headersTimeout`` and Envoy's
  ``request_headers_timeout``: a deadline for the whole head, not an idle timer that every
  byte restarts;
- **header size** — the request line and headers together within ``max_header_bytes``, or
  400 and close (each line also within aiohttp's own 8190 bytes, as with nginx's 8k
  buffers);
- **malformed requests** (bad chunking, Content-Length with Transfer-Encoding, bad method or
  version, NUL in a header...) — answered 400 with the JSON error body and logged as *one*
  WARNING line each (no traceback), at most ``malformed_log_per_s`` lines a second per
  process, the rest counted in a "suppressed N" line (:class:`ClientLog`);
- **a malformed body** (a bad chunk after the headers were accepted) — aiohttp's C parser
  drops the request's body stream without an error, so the handler waited for the rest of
  the body until the upstream timeout (a 504 after 30 s). The parse error is now set on the
  body stream at once: the handler answers 400 and the connection closes.

This subclasses aiohttp's low-level ``web_protocol.RequestHandler`` and reads a few of its
private names (``_waiter``, ``_messages``, ``_request_count``, ``_request_in_progress``,
``_ErrInfo``); the tests in
``tests/security/test_connection_limits.py`` drive the real process over raw sockets, so an
aiohttp upgrade that changes them fails there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from proxy.config import Limits
from proxy.errors import BadRequestError, ClientTimeoutError, ProxyError, error_body

log = logging.getLogger("splitway.http")


@dataclass(slots=True)
class LogBudget:
    """At most ``per_s`` lines in each one-second window; the rest are counted."""

    per_s: int
    window_start: float = -math.inf
    used: int = 0
    suppressed: int = 0

    def _roll(self, now: float) -> int:
        """Start a new window if the current one is over; the count it suppressed."""
        if now - self.window_start < 1.0:
            return 0
        ended, self.suppressed = self.suppressed, 0
        self.window_start, self.used = now, 0
        return ended

    def take(self, now: float) -> tuple[bool, int]:
        """(may this line be written?, lines suppressed in the window that just ended)."""
        ended = self._roll(now)
        if self.used < self.per_s:
            self.used += 1
            return True, ended
        self.suppressed += 1
        return False, ended

    def drain(self, now: float) -> int:
        """Lines suppressed in a window that is over (0 while it lasts)."""
        return self._roll(now) if self.suppressed else 0


@dataclass(slots=True)
class ClientLog:
    """The WARNING log of client misbehaviour, one line per event, rate-limited. One per
    process, shared by its listeners; a "suppressed" line follows a busy second even if
    nothing else happens after it."""

    budget: LogBudget
    _flush: asyncio.TimerHandle | None = field(default=None, repr=False)

    def warn(self, loop: asyncio.AbstractEventLoop, what: str, remote: str,
             detail: str) -> None:
        """One line, ``"{what} from {remote}: {detail}"``, if the budget allows."""
        emit, ended = self.budget.take(loop.time())
        self._report(ended)
        if emit:
            log.warning("%s from %s: %s", what, remote, detail)
        elif self._flush is None:
            self._flush = loop.call_at(self.budget.window_start + 1.0, self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush = None
        self._report(self.budget.drain(loop.time()))

    def _report(self, suppressed: int) -> None:
        if suppressed:
            log.warning("suppressed %d more such warnings (over %d a second)",
                        suppressed, self.budget.per_s)


@dataclass(frozen=True, slots=True)
class Guard:
    """What every connection of a process checks against, and where it reports."""

    limits: Limits
    log: ClientLog

    @classmethod
    def of(cls, limits: Limits) -> Guard:
        return cls(limits, ClientLog(LogBudget(limits.malformed_log_per_s)))


_DATA = re.compile(r":?\s*b(['\"]).*$")  # aiohttp's message quotes the offending bytes


def reason_of(exc: HttpProcessingError) -> str:
    """aiohttp's parse error as one short printable line, without the client's bytes:
    ``"Bad status line: Invalid HTTP version"``."""
    head = str(exc.message).split("\n\n", 1)[0]
    text = " ".join(part.strip() for part in head.splitlines() if part.strip())
    text = _DATA.sub("", text).rstrip(":. ") or type(exc).__name__
    return "".join(c if c.isprintable() else "?" for c in text[:160])


def _head_size(msg: RawRequestMessage) -> int:
    """The bytes of a parsed request line and headers (each line with its CRLF)."""
    return (len(msg.method) + len(msg.path) + 13
            + sum(len(k) + len(v) + 4 for k, v in msg.raw_headers) + 2)


def pipelined_rest(data: bytes, *, body_tail: int, head_in_data: bool) -> int:
    """How many bytes at the end of ``data`` — the read that completed a request — already
    belong to the next request's head (0 when the read ended with the request, or when
    that cannot be told; blank lines between requests do not count, the parser skips them).

    ``body_tail`` is how many bytes of the request's Content-Length body were in this read
    (0 without a body, and for a chunked one, which ends with a blank line as a head does);
    ``head_in_data`` says whether the request's head ended in this read too. A request
    framed by a blank line ends at the last one in ``data`` (the rest holds none, or it
    would have been parsed as a complete head); a body that is exactly the end of a read
    leaves nothing over, so this never reports bytes that are not there — at worst, with a
    body ending in blank lines, fewer than there are."""
    end = len(data) - body_tail
    if head_in_data or not body_tail:
        blank = max(data.rfind(b"\n\n", 0, end) + 2, data.rfind(b"\n\r\n", 0, end) + 3)
        if blank < 2:  # not found (-1 + 2, -1 + 3 ... under 2 only when both missed)
            return 0
        end = blank
    return len(data[end + body_tail:].lstrip(b"\r\n"))


def _raw_response(exc: ProxyError) -> bytes:
    """A complete ``Connection: close`` response, for when aiohttp has no request to
    answer (the headers never completed)."""
    body = json.dumps(error_body(exc, request_id=None)).encode()
    return (f"HTTP/1.1 {exc.status} {HTTPStatus(exc.status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with the limits described in the module docstring."""

    __slots__ = ("_guard", "_head_bytes", "_head_deadline", "_head_timeout", "_head_timer",
                 "_last_body", "_last_chunked", "_max_head", "_pending_head")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._head_timeout = manager.guard.limits.header_read_timeout_s
        self._max_head = manager.guard.limits.max_header_bytes
        # The head being read must be complete by ``_head_deadline`` (None: no head being
        # read). Arming and disarming per request only set it; the one timer, when it
        # fires, looks at it and sleeps again if the deadline moved (aiohttp's keep-alive
        # timer works the same way): no timer is made and cancelled per request.
        self._head_deadline: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of the head being read
        # bytes of a head that came while earlier requests were being answered: its
        # deadline starts when they are (finish_response)
        self._pending_head = 0
        self._last_body: StreamReader | None = None  # the newest request's body stream
        self._last_chunked = False  # ... and whether it is chunked

    # -- the head deadline -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm(self, head_bytes: int = 0) -> None:
        self._head_bytes = head_bytes
        deadline = self._loop.time() + self._head_timeout
        self._head_deadline = deadline
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._head_timer_fired)

    def _disarm(self) -> None:
        self._head_deadline = None
        self._head_bytes = 0
        self._pending_head = 0

    def _head_begins(self, size: int) -> None:
        """``size`` bytes of a new head arrived: its deadline starts now, or — when requests
        before it are being answered or wait their turn — once they are answered."""
        if self._request_in_progress or self._messages:
            self._pending_head += size
        else:
            self._arm(size)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        if self._pending_head and not self._messages and self._head_deadline is None:
            self._arm(self._pending_head)  # the answers before the head are sent
            self._pending_head = 0
            if self._head_bytes > self._max_head:
                self._refuse_oversized()
        return result

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return  # no head being read; the next one schedules the timer again
        if self._loop.time() < deadline:  # a later head re-armed it: sleep until then
            self._head_timer = self._loop.call_at(deadline, self._head_timer_fired)
            return
        self._head_timed_out()

    def _idle(self) -> bool:
        """Between requests: ``start()`` waits for the next message."""
        return self._waiter is not None and not self._waiter.done()

    def _between_messages(self) -> bool:
        """The parser has no request open: the next byte starts a new head."""
        if self._upgraded or self._payload_parser is not None:
            return False  # a WebSocket (or other upgraded) stream has no more heads
        body = self._last_body
        return body is None or body.is_eof()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._between_messages():
            return
        if not self._idle():
            # A pipelined head stalled behind a request still being answered: end the
            # connection after that answer rather than write into it.
            self.close()
            return
        seconds = f"{self._guard.limits.header_read_timeout_s:g}s"
        if self._head_bytes:
            self._refuse(ClientTimeoutError(f"request headers not complete within {seconds}"),
                         "slow request headers", f"not complete within {seconds} (408)")
        else:  # nothing of a request: close without a word, like an idle keep-alive
            self.log_debug("closing a connection that sent no request within %s", seconds)
            self.force_close()

    def _refuse(self, exc: ProxyError, what: str, detail: str) -> None:
        self._disarm()
        self._guard.log.warn(self._loop, what, self._remote(), detail)
        if self.transport is not None:
            self.transport.write(_raw_response(exc))  # flushed by the close
        self.force_close()

    def _remote(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    # -- bytes in ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        counted = self._head_deadline is not None
        if counted:
            self._head_bytes += len(data)
        elif data and self._between_messages():
            self._head_begins(len(data))  # the first bytes of a keep-alive request
            counted = self._head_deadline is not None
        limit = self._max_head
        before = self._request_count
        body = self._last_body
        body_open = body is not None and not body.is_eof()
        body_seen = body.total_bytes if body is not None else 0
        super().data_received(data)
        if self._request_count != before:
            # Heads are complete (or refused as malformed). Only when more bytes than the
            # limit came in (or they were not counted: pipelined behind a body) can one of
            # them be over it.
            measure = not counted or self._head_bytes > limit
            self._disarm()
            if self._after_messages(self._request_count - before, measure):
                self._after_request(data, head_in_data=True, body_seen=0)
        elif body_open and body is not None and body.is_eof():
            self._after_request(data, head_in_data=False, body_seen=body_seen)
        elif counted and self._head_bytes > limit:
            self._refuse_oversized()

    def _refuse_oversized(self) -> None:
        limit = self._max_head
        self._refuse(BadRequestError(f"request headers over {limit} bytes"),
                     "oversized request headers", f"over {limit} bytes (400)")

    def _after_request(self, data: bytes, *, head_in_data: bool, body_seen: int) -> None:
        """A read completed a request: start the deadline of the next head if the read
        already held the start of it."""
        body = self._last_body
        if body is None or not body.is_eof():
            return  # its body is still arriving: the rest of the read went to it
        tail = 0 if self._last_chunked else body.total_bytes - body_seen
        rest = pipelined_rest(data, body_tail=tail, head_in_data=head_in_data)
        if rest:
            self._head_begins(rest)

    def _after_messages(self, count: int, measure: bool) -> bool:
        """Check the heads just parsed against ``max_header_bytes`` (if ``measure``); keep
        the newest body stream, and fail it at once if its bytes did not parse. ``True``
        when the last of them is a request (not a parse error)."""
        limit = self._max_head
        for i in range(len(self._messages) - count, len(self._messages)):
            msg, body = self._messages[i]
            if isinstance(msg, RawRequestMessage):
                if measure and _head_size(msg) > limit:  # a whole head in one read
                    self._messages[i] = (_ErrInfo(status=400, exc=BadHttpMessage(
                        f"request headers over {limit} bytes"), message=""), body)
                self._last_body, self._last_chunked = body, bool(msg.chunked)
                continue
            last = self._last_body
            if isinstance(msg.exc, HttpProcessingError) and last is not None and (
                    not last.is_eof()):
                # A parse error while a body was still arriving belongs to that body: fail
                # the stream its handler reads, rather than answer a second time after it.
                del self._messages[i]
                if self._request_in_progress:  # its handler may be reading it
                    last.set_exception(msg.exc)
                # Nothing more will come: this also ends aiohttp's lingering read of a body
                # the handler left unread (an error there would be an "Unhandled exception").
                last.feed_eof()
                self.close()
                self._guard.log.warn(self._loop, "malformed request body", self._remote(),
                                     f"{reason_of(msg.exc)} (400)")
            return False  # nothing is parsed after an error
        return True


    # -- malformed requests -------------------------------------------------------------
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = reason_of(exc)
        self._guard.log.warn(self._loop, "malformed request", request.remote or self._remote(),
                             f"{reason} ({status})")
        resp = web.json_response(
            error_body(BadRequestError(f"malformed request: {reason}"), request_id=None),
            status=status)
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's ``Server`` whose connections run :class:`GuardedRequestHandler`."""

    def __init__(self, handler: Any, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`GuardedServer` with ``guard``'s limits."""

    __slots__ = ("_guard",)

    def __init__(self, app: web.Application, *, guard: Guard, **kwargs: Any) -> None:
        limits = guard.limits
        # aiohttp's own per-line limits (8190 bytes) stay: 128 headers of that size bound
        # what a head can hold before the total is checked.
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout_s, **kwargs)
        self._guard = guard

    async def drain(self) -> None:
        """Stop accepting, then let requests in flight finish within ``shutdown_timeout``
        and cancel what is still running — the first half of :meth:`cleanup` (which then
        finds nothing left to wait for), so that several runners can drain at once."""
        for site in list(self.sites):
            await site.stop()
        server = self.server
        if server is not None:
            await asyncio.sleep(0)  # as cleanup() does: let accepted requests start
            server.pre_shutdown()
            await server.shutdown(self._shutdown_timeout)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation,
                             loop=plain._loop, guard=self._guard, **plain._kwargs)
