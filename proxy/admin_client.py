"""A small client of the admin API for the CLI's client commands.

Maps the API's answers to the CLI's exit codes in one place: 2 when the server says the
input was wrong (400/422), 1 for any other failure (refused, not found, conflict,
unreachable server), 0 on success.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


class ClientFailure(Exception):
    """An admin API call failed; ``exit_code`` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class AdminClient:
    base_url: str
    token: str | None = None
    timeout_s: float = 30.0

    def call(self, method: str, path: str, body: Any = None,
             params: dict[str, str] | None = None, *, raw: bytes | None = None) -> Any:
        """One request (a JSON ``body``, or ``raw`` bytes sent as octet-stream); returns
        the decoded JSON (or text) or raises :class:`ClientFailure`."""
        return asyncio.run(self._call(method, path, body, params, raw))

    async def _call(self, method: str, path: str, body: Any,
                    params: dict[str, str] | None, raw: bytes | None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        url = self.base_url.rstrip("/") + path
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as session, session.request(method, url, json=body if raw is None else None,
                                          data=raw, headers=headers, params=params) as resp:
                text = await resp.text()
                status = resp.status
                is_json = resp.content_type == "application/json"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ClientFailure(f"cannot reach the admin API at {self.base_url}: "
                                f"{exc or type(exc).__name__}") from exc
        data = json.loads(text) if is_json and text else text
        if status >= 400:
            detail = data.get("detail") if isinstance(data, dict) else text
            field = data.get("field") if isinstance(data, dict) else None
            where = f" ({field})" if field else ""
            raise ClientFailure(f"{status} {detail}{where}",
                                2 if status in (400, 413, 422) else 1)
        return data
