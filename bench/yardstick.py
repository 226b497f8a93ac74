"""The yardstick: a minimal aiohttp pass-through proxy, the baseline splitway is held to.

What a user could write in 40 lines: uvloop, one ``ClientSession`` with a keep-alive
pool, the request body streamed upstream and the response body streamed back, headers
copied minus hop-by-hop ones. No routing, splitting, metrics or request ids.

Usage::

    python bench/yardstick.py --port 18100 --upstream http://127.0.0.1:18001

Prints ``yardstick ready URL`` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Mapping

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _copy(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request upstream and stream the answer back."""
    session = request.app[SESSION]
    body = request.content if request.body_exists else None
    async with session.request(request.method, request.app[UPSTREAM] + request.raw_path,
                               headers=_copy(request.headers), data=body,
                               allow_redirects=False) as upstream:
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                 headers=_copy(upstream.headers))
        if upstream.content_length is not None:
            out.content_length = upstream.content_length
        await out.prepare(request)
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION] = session
        yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="backend base URL")
    args = p.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    ready = f"yardstick ready http://{args.host}:{args.port}"
    web.run_app(app, host=args.host, port=args.port, access_log=None,
                loop=uvloop.new_event_loop(), print=lambda _: print(ready, flush=True))


if __name__ == "__main__":
    main()
