"""Webhook notifications: JSON POSTs with a Slack-compatible ``text`` and structured fields.

:meth:`Notifier.notify` never blocks its caller (a rollback must not wait for a chat
server): each delivery is a task the notifier owns, retried with exponential backoff
(0.5 s, 1 s, 2 s …) up to ``retries`` times, and cancelled by :meth:`close`.
:meth:`Notifier.confirm` is the blocking kind, for ``confirm_webhook`` gates: a step
proceeds only when the hook answers 2xx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

log = logging.getLogger("splitway.notify")


class Notifier:
    def __init__(self, urls: Sequence[str], *, timeout_s: float = 5.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:
        self.urls = tuple(urls)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._backoff = backoff_s
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def notify(self, text: str, fields: Mapping[str, Any]) -> None:
        """Send ``{"text": ..., **fields}`` to every webhook in the background."""
        payload = {"text": text, **fields}
        for url in self.urls:
            task = asyncio.get_running_loop().create_task(self._deliver(url, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                async with self._client().post(url, json=payload) as resp:
                    if resp.status < 300:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self._retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("webhook %s gave up after %d attempts: %s", url, self._retries + 1, problem)

    async def confirm(self, url: str, fields: Mapping[str, Any]) -> tuple[bool, str]:
        """Ask a confirm hook; ``(True, "")`` only on a 2xx answer."""
        try:
            async with self._client().post(url, json={"text": "confirm", **fields}) as resp:
                await resp.read()
                return resp.status < 300, f"confirm hook answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, f"confirm hook unreachable: {type(exc).__name__}"

    async def close(self) -> None:
        """Give pending deliveries a moment, then cancel them and close the session."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
