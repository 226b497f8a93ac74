"""What this process last saw of its state store: available, or away since when and why.

Every transaction (and :meth:`~control.store.base.Store.ping`) reports its outcome here:
a :class:`~proxy.errors.StoreUnavailableError` (connection refused or lost, pool
exhausted, database locked) marks the store *unavailable*; a completed transaction marks
it *available* again — but a read only when no write has failed meanwhile, because a
SQLite file another process keeps locked still reads while every write waits out its busy
timeout. Other store errors (a bad query, a constraint) say nothing about reachability and
leave it alone.

The readiness probe names the problem from here, and the transitions are logged once each
(a warning when the store goes away, another when it is back, with how long it was away),
so an outage is two log lines rather than a traceback per background tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("splitway.store")


@dataclass(slots=True)
class StoreHealth:
    """Reachability of the store as seen by this process (monotonic-clock times)."""

    clock: Callable[[], float] = time.monotonic
    available: bool = True
    changed_at: float = 0.0
    last_ok_at: float | None = None
    last_failure_at: float | None = None
    detail: str = ""  # the last failure, while unavailable
    writes_failed: bool = False  # a write failed during this outage

    def succeeded(self, *, write: bool) -> None:
        now = self.clock()
        self.last_ok_at = now
        if not self.available and (write or not self.writes_failed):
            log.warning("state store available again after %.1f s", now - self.changed_at)
            self.available, self.changed_at, self.detail = True, now, ""
            self.writes_failed = False

    def failed(self, detail: str, *, write: bool) -> None:
        now = self.clock()
        self.last_failure_at, self.detail = now, detail
        self.writes_failed = write or (self.writes_failed and not self.available)
        if self.available:
            log.warning("state store unavailable (%s): requests are served from the last "
                        "route table, rollouts and experiments wait, admin writes answer "
                        "503 until it is back", detail)
            self.available, self.changed_at = False, now

    def problem(self) -> str | None:
        """A one-line readiness problem, or None while the store is available."""
        if self.available:
            return None
        return (f"state store unavailable for {self.clock() - self.changed_at:.0f} s: "
                f"{self.detail}")
