"""State stores: pick one by URL with :func:`open_store` (contract §2, ``state:``).

- ``sqlite:///relative/path.db`` (relative to the working directory),
  ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``; options as a query
  string: ``?busy_timeout_ms=30000&synchronous=full``.
- ``postgresql://user@host:5432/db`` (also ``postgres://``); anything libpq accepts,
  e.g. ``?options=-csearch_path%3Dmyschema``.

``open_store`` only builds the store; ``await store.open()`` (or ``async with``)
connects and applies migrations::

    async with open_store(settings.state) as store:
        await store.set_route_weights("sentiment", {"stable": 90, "canary": 10}, "alice")
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from control.audit import utc_now
from control.store.base import Clock, Params, Row, Store, Transaction
from control.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
from control.store.postgres import PostgresStore
from control.store.sqlite import SqliteStore
from proxy.errors import StoreError

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Clock",
    "Migration",
    "Params",
    "PostgresStore",
    "Row",
    "SqliteStore",
    "Store",
    "Transaction",
    "open_store",
]


def open_store(
    url: str,
    *,
    hmac_key: bytes | None = None,
    clock: Clock = utc_now,
    schema: str | None = None,
) -> Store:
    """The store for ``url`` (not yet opened). ``schema`` is for PostgreSQL only."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        return PostgresStore(url, schema=schema, hmac_key=hmac_key, clock=clock)
    if scheme != "sqlite" or not sep:
        raise StoreError(f"unsupported state URL {url!r}: use sqlite:/// or postgresql://")
    if schema is not None:
        raise StoreError("schema= applies to PostgreSQL stores only")
    location, _, query = rest.partition("?")
    if not location.startswith("/") or len(location) < 2:
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///PATH (sqlite:////ABS/PATH)")
    options = dict(parse_qsl(query, strict_parsing=False))
    unknown = set(options) - {"busy_timeout_ms", "synchronous"}
    if unknown:
        raise StoreError(f"unknown SQLite URL option(s): {', '.join(sorted(unknown))}")
    try:
        busy = int(options.get("busy_timeout_ms", "30000"))
    except ValueError:
        raise StoreError("busy_timeout_ms must be an integer") from None
    return SqliteStore(
        location[1:],
        busy_timeout_ms=busy,
        synchronous=options.get("synchronous", "FULL"),
        hmac_key=hmac_key,
        clock=clock,
    )
