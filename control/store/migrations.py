"""Versioned schema migrations, applied by ``Store.open()``.

Each :class:`Migration` is a numbered script: ``common`` SQL shared by both dialects
plus optional ``sqlite``/``postgresql`` additions (kept small: JSON is TEXT, times are
RFC 3339 TEXT). ``schema_migrations(version)`` records what has run. Scripts are split
on ``;`` and run statement by statement inside the runner's transaction, so a
migration either applies whole (with its version row) or not at all; scripts must
therefore not contain ``;`` inside literals or comments.

Two processes may open the same database at once (a fleet restarting, the tests'
writer processes), so the runner serialises itself before looking at
``schema_migrations``: the SQLite transaction is ``BEGIN IMMEDIATE`` (exclusive), and on
PostgreSQL ``tx.lock(MIGRATION_LOCK_KEY)`` takes ``pg_advisory_xact_lock``. The second
process then finds every version applied and does nothing: applying is idempotent. A
database newer than this code (an unknown version) is refused rather than guessed at.

Never edit a released migration; add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.errors import StoreError

if TYPE_CHECKING:
    from control.store.base import Store

MIGRATION_LOCK_KEY = 0x5357_0001


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    common: str = ""
    sqlite: str = ""
    postgresql: str = ""

    def statements(self, dialect: str) -> list[str]:
        extra = {"sqlite": self.sqlite, "postgresql": self.postgresql}[dialect]
        script = f"{self.common};{extra}"
        return [stmt.strip() for stmt in script.split(";") if stmt.strip()]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "audit events, route weights, kv",
        sqlite="""
            CREATE TABLE audit_events (
                seq          INTEGER PRIMARY KEY,
                id           TEXT NOT NULL UNIQUE,
                ts           TEXT NOT NULL,
                type         TEXT NOT NULL,
                actor        TEXT NOT NULL,
                severity     TEXT NOT NULL,
                resource     TEXT NOT NULL,
                details_json TEXT NOT NULL,
                prev_hash    TEXT NOT NULL,
                hash         TEXT NOT NULL
            )
        """,
        postgresql="""
            CREATE TABLE audit_events (
                seq          BIGINT PRIMARY KEY,
                id           TEXT NOT NULL UNIQUE,
                ts           TEXT NOT NULL,
                type         TEXT NOT NULL,
                actor        TEXT NOT NULL,
                severity     TEXT NOT NULL,
                resource     TEXT NOT NULL,
                details_json TEXT NOT NULL,
                prev_hash    TEXT NOT NULL,
                hash         TEXT NOT NULL
            )
        """,
        common="""
            CREATE TABLE route_weights (
                route        TEXT PRIMARY KEY,
                weights_json TEXT NOT NULL,
                updated_by   TEXT NOT NULL,
                updated_at   TEXT NOT NULL
            );
            CREATE TABLE kv (
                namespace    TEXT NOT NULL,
                key          TEXT NOT NULL,
                value_json   TEXT NOT NULL,
                updated_at   TEXT NOT NULL,
                PRIMARY KEY (namespace, key)
            )
        """,
    ),
    Migration(
        2,
        "audit query indexes",
        common="""
            CREATE INDEX audit_events_type ON audit_events (type, seq);
            CREATE INDEX audit_events_actor ON audit_events (actor, seq);
            CREATE INDEX audit_events_resource ON audit_events (resource, seq);
            CREATE INDEX audit_events_ts ON audit_events (ts)
        """,
    ),
    Migration(
        3,
        "content-addressed artifacts",
        sqlite="""
            CREATE TABLE artifacts (
                sha256       TEXT PRIMARY KEY,
                size         INTEGER NOT NULL,
                content      BLOB NOT NULL,
                created_at   TEXT NOT NULL
            )
        """,
        postgresql="""
            CREATE TABLE artifacts (
                sha256       TEXT PRIMARY KEY,
                size         BIGINT NOT NULL,
                content      BYTEA NOT NULL,
                created_at   TEXT NOT NULL
            )
        """,
    ),
    Migration(
        4,
        "model registry and promotions",
        common="""
            CREATE TABLE models (
                name         TEXT PRIMARY KEY,
                created_at   TEXT NOT NULL,
                created_by   TEXT NOT NULL
            );
            CREATE TABLE model_versions (
                model              TEXT NOT NULL REFERENCES models (name),
                version            TEXT NOT NULL,
                stage              TEXT NOT NULL,
                stage_promotion_id TEXT,
                stage_changed_at   TEXT NOT NULL,
                description        TEXT NOT NULL,
                metrics_json       TEXT NOT NULL,
                params_json        TEXT NOT NULL,
                tags_json          TEXT NOT NULL,
                lineage_json       TEXT NOT NULL,
                backend            TEXT NOT NULL,
                artifact_uri       TEXT,
                artifact_sha256    TEXT REFERENCES artifacts (sha256),
                created_at         TEXT NOT NULL,
                created_by         TEXT NOT NULL,
                PRIMARY KEY (model, version)
            );
            CREATE UNIQUE INDEX model_versions_one_production
                ON model_versions (model) WHERE stage = 'production';
            CREATE TABLE promotions (
                id            TEXT PRIMARY KEY,
                model         TEXT NOT NULL,
                version       TEXT NOT NULL,
                from_stage    TEXT NOT NULL,
                to_stage      TEXT NOT NULL,
                justification TEXT NOT NULL,
                requested_by  TEXT NOT NULL,
                requested_at  TEXT NOT NULL,
                state         TEXT NOT NULL,
                closed_by     TEXT,
                closed_at     TEXT,
                FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
            );
            CREATE UNIQUE INDEX promotions_one_pending
                ON promotions (model, version) WHERE state = 'pending';
            CREATE INDEX promotions_by_time ON promotions (requested_at);
            CREATE TABLE promotion_reviews (
                promotion_id  TEXT NOT NULL REFERENCES promotions (id),
                reviewer      TEXT NOT NULL,
                decision      TEXT NOT NULL,
                comment       TEXT,
                at            TEXT NOT NULL,
                PRIMARY KEY (promotion_id, reviewer)
            );
            CREATE TABLE promotion_comments (
                promotion_id  TEXT NOT NULL REFERENCES promotions (id),
                seq           INTEGER NOT NULL,
                author        TEXT NOT NULL,
                body          TEXT NOT NULL,
                at            TEXT NOT NULL,
                PRIMARY KEY (promotion_id, seq)
            )
        """,
    ),
    Migration(
        5,
        "audit key fingerprints",
        common="""
            CREATE TABLE audit_keys (
                since_seq    BIGINT PRIMARY KEY,
                fingerprint  TEXT NOT NULL,
                recorded_at  TEXT NOT NULL
            )
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


async def apply_migrations(store: Store) -> list[int]:
    """Apply the missing migrations in one transaction; the versions applied now."""
    applied_now: list[int] = []
    async with store.transaction() as tx:
        await tx.lock(MIGRATION_LOCK_KEY)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        rows = await tx.fetchall("SELECT version FROM schema_migrations")
        done = {int(r["version"]) for r in rows}
        unknown = sorted(done - {m.version for m in MIGRATIONS})
        if unknown:
            raise StoreError(
                f"database has schema version {unknown[-1]}, newer than this splitway "
                f"(knows up to {LATEST_VERSION})"
            )
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements(store.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, store.now()),
            )
            applied_now.append(migration.version)
    return applied_now
