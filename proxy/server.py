"""Process lifecycle: uvloop, listeners, signals, graceful drain, worker processes.

* ``SIGHUP`` reloads the config file (see :meth:`ProxyState.reload`): requests in flight
  finish on the old config; an invalid file is refused and the old one keeps serving.
* ``SIGTERM``/``SIGINT`` stop accepting connections, let requests in flight finish within
  ``grace_period_s`` — on both listeners at once, so the grace period is not spent twice;
  an admin request still running then (a stalled body, say) is cancelled like a data one —
  then close pools, background loops and the store, in reverse order.
* ``--workers N`` runs N processes on the same data port with ``SO_REUSEPORT`` (the kernel
  spreads connections). Worker ``i`` serves its admin API on the admin port + ``i``, since
  each worker has its own metrics: scrape each as its own target. Weights set through any
  worker reach the others through the state store within a second.

Once listening, the process prints one line to stdout that tools and tests read::

    splitway ready data=http://127.0.0.1:8080 admin=http://127.0.0.1:9901 pid=1234
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.admin import create_admin_app
from proxy.app import ProxyState, create_data_app
from proxy.config import Settings, parse_listen
from proxy.config_files import load_config_files
from proxy.connection import Guard, GuardedAppRunner
from proxy.errors import ConfigError

log = logging.getLogger("splitway.server")


def _url(addr: object, scheme: str) -> str:
    host, port = addr[0], addr[1]  # type: ignore[index]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class Started:
    """A proxy that is listening: its state and the URLs it answers on."""

    state: ProxyState
    data_urls: tuple[str, ...]
    admin_url: str


@contextlib.asynccontextmanager
async def started(
    settings: Settings,
    *,
    config_path: Path | None,
    env: Mapping[str, str],
    worker: int = 0,
    reuse_port: bool = False,
) -> AsyncIterator[Started]:
    """Start listening; on exit stop accepting, drain within the grace period, close."""
    # The same reading and checks as `splitway check`; the tokens file is read again on
    # each reload (ProxyState.reload).
    files = load_config_files(settings)
    tokens, tls = files.tokens, files.tls
    # One guard per process: both listeners share its limits and its rate-limited log.
    guard = Guard.of(settings.limits)
    state = ProxyState(settings, config_path=config_path, env=env)
    # auto_decompress=False on both: request bodies reach a backend exactly as sent (a
    # gzip body was forwarded inflated under its Content-Encoding: gzip header), and
    # neither listener inflates a small compressed body into a large one.
    data_runner = GuardedAppRunner(
        create_data_app(state), guard=guard, handler_cancellation=True, access_log=None,
        shutdown_timeout=settings.grace_period_s, handle_signals=False,
        auto_decompress=False,
    )
    await data_runner.setup()  # opens the store and builds the runtime (cleanup_ctx)
    admin_runner = GuardedAppRunner(create_admin_app(state, tokens), guard=guard,
                                    access_log=None, handle_signals=False,
                                    shutdown_timeout=settings.grace_period_s,
                                    auto_decompress=False)
    try:
        await admin_runner.setup()
        for addr in settings.listen_addresses:
            await web.TCPSite(data_runner, addr.host, addr.port, ssl_context=tls,
                              reuse_port=reuse_port or None).start()
        a = parse_listen(settings.admin.listen)
        await web.TCPSite(admin_runner, a.host, a.port + worker if a.port else 0).start()
        scheme = "https" if tls else "http"
        yield Started(state, tuple(_url(x, scheme) for x in data_runner.addresses),
                      _url(admin_runner.addresses[0], "http"))
    finally:
        # Both listeners drain together within the grace period; then the admin app's
        # clean-up (pending security.violation events) runs before the data app closes
        # the store.
        await asyncio.gather(admin_runner.drain(), data_runner.drain())
        await admin_runner.cleanup()
        await data_runner.cleanup()


async def serve(
    settings: Settings,
    *,
    config_path: Path | None,
    env: Mapping[str, str],
    worker: int = 0,
    reuse_port: bool = False,
) -> int:
    """Run one proxy process until SIGTERM/SIGINT; returns the exit code."""
    async with started(settings, config_path=config_path, env=env, worker=worker,
                       reuse_port=reuse_port) as s:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: s.state.own(_reload(s.state), "reload"))
        # What start-up built (settings, compiled routes, histograms, imported modules) lives
        # as long as the process: freezing it keeps full collections from walking ~100k
        # objects (80 ms pauses under load in the bench) while requests allocate.
        gc.collect()
        gc.freeze()
        print(f"splitway ready data={' '.join(s.data_urls)} admin={s.admin_url} "
              f"pid={os.getpid()}", flush=True)
        await stop.wait()
        log.info("draining (grace %.1fs)", settings.grace_period_s)
    return 0


async def _reload(state: ProxyState) -> None:
    """The SIGHUP reload. Nothing awaits this task, so every failure is logged here, as one
    line: an escaping exception would only surface as "Task exception was never
    retrieved" when the task is collected."""
    try:
        await state.reload(actor="sighup")
    except ConfigError as exc:
        log.error("reload refused, the old config keeps serving: %s",
                  "; ".join(map(str, exc.problems)))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("reload failed: %s: %s", type(exc).__name__, exc)


def _die_with_parent() -> None:
    """In a worker, before exec: ask Linux for SIGTERM when the supervisor dies, so a
    supervisor killed with SIGKILL leaves no orphan workers holding the port."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_workers(argv: Sequence[str], workers: int) -> int:
    """Start ``workers`` copies of this command as ``--worker I`` and supervise them."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "proxy", *argv, "--worker", str(i)],
                         preexec_fn=_die_with_parent)
        for i in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)
