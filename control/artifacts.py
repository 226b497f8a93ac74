"""Content-addressed model artifacts kept in the state store.

An uploaded artifact is stored once under the SHA-256 of its bytes (``artifacts`` table:
``sha256`` primary key, ``size``, the bytes as BLOB/BYTEA): uploading the same bytes
twice stores them once, and a version registered with ``{"sha256": ...}`` refers to them.
The upload endpoint feeds the request body through :class:`ArtifactHasher` chunk by chunk,
so the digest and the size cap (:data:`MAX_ARTIFACT_BYTES`, 64 MiB) are checked while
reading; a body over the cap is refused (413) before it is all read.

Why in the state store: one place to back up, one transaction with the registration, and
no file path for a name to escape through. Artifacts larger than the cap belong in an
object store; register those by URI (``{"uri": "s3://..."}``).

Uploads are not audited on their own (an unreferenced blob changes nothing); the
``model.registered`` event of the version that uses one records its digest and size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.errors import BodyTooLargeError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from control.store import Store, Transaction

MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """A stored artifact: its digest and size (``created``: new to the store)."""

    sha256: str
    size: int
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


class ArtifactHasher:
    """Accumulate an upload chunk by chunk, hashing it and enforcing the size cap."""

    def __init__(self, limit: int = MAX_ARTIFACT_BYTES) -> None:
        self.limit = limit
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyTooLargeError(f"artifact larger than {self.limit} bytes")
        self._hash.update(chunk)
        self._chunks.append(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def content(self) -> bytes:
        return b"".join(self._chunks)


def check_sha256(value: object, field: str = "sha256") -> str:
    """A lowercase hex SHA-256, or a 422 naming ``field``."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidInputError(f"{value!r} is not a SHA-256 (64 lowercase hex digits)",
                                field=field)
    return value


async def put_artifact(store: Store, data: bytes | ArtifactHasher) -> ArtifactInfo:
    """Store the bytes under their SHA-256 (once); their digest and size."""
    if isinstance(data, bytes):
        hasher = ArtifactHasher()
        hasher.update(data)
    else:
        hasher = data
    if hasher.size == 0:
        raise InvalidInputError("an artifact must not be empty", field="body")
    async with store.transaction() as tx:
        n = await tx.execute(
            "INSERT INTO artifacts (sha256, size, content, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO NOTHING",
            (hasher.sha256, hasher.size, hasher.content(), store.now()))
    return ArtifactInfo(hasher.sha256, hasher.size, created=n > 0)


async def artifact_size(tx: Transaction, sha256: str) -> int | None:
    """The size of a stored artifact, or ``None`` when it is not stored."""
    row = await tx.fetchone("SELECT size FROM artifacts WHERE sha256 = ?", (sha256,))
    return None if row is None else int(row["size"])


async def get_artifact(store: Store, sha256: str) -> bytes:
    """The stored bytes (404 when unknown)."""
    check_sha256(sha256)
    async with store.transaction(readonly=True) as tx:
        row = await tx.fetchone("SELECT content FROM artifacts WHERE sha256 = ?", (sha256,))
    if row is None:
        raise NotFoundError(f"no artifact {sha256}")
    return bytes(row["content"])
