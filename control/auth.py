"""Admin API tokens and roles (contract §7, §8).

``tokens.yaml`` holds the SHA-256 of each token, never the token::

    tokens:
      - {sha256: 9f86d0...64 hex, user: alice, roles: [operator]}
      - {sha256: 60303a...64 hex, user: bob, roles: [approver, viewer]}

Roles: ``viewer`` reads; ``operator`` changes traffic (weights, rollouts, models) and may
also read; ``approver`` reviews promotions; ``admin`` has every role. (``operator``
implies ``viewer`` because operating without reading the state one changes is not
workable; ``approver`` does not, so a pure reviewer gets ``[approver, viewer]``.)

The pieces are pure so that the HTTP layer only glues them: :func:`parse_bearer` reads
the header, :meth:`TokenTable.authenticate` finds the principal, :func:`authorize`
decides (and :mod:`control.refusals` names the refusal). Without a tokens file the admin API
serves reads without a token and refuses every write; with one, every ``/api/v1`` call
needs a valid token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from proxy.config_load import load_yaml, validation_problems
from proxy.errors import (
    ConfigError,
    ConfigProblem,
    ForbiddenError,
    ReadOnlyError,
    UnauthorizedError,
)
from proxy.yaml_load import MAX_YAML_BYTES, TOO_LARGE

if sys.platform != "win32":  # POSIX: serialize concurrent ``token create`` on one file
    import fcntl

TOKEN_PREFIX = "spw_"  # noqa: S105 - a prefix, not a secret
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Role(StrEnum):
    """An admin API role."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


# the roles each role grants besides itself (admin: all of them)
IMPLIES: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset(),
    Role.OPERATOR: frozenset({Role.VIEWER}),
    Role.APPROVER: frozenset(),
    Role.ADMIN: frozenset(Role),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user name and the roles their token carries."""

    user: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        """Whether this principal holds ``role`` (directly or implied, e.g. by ``admin``)."""
        return any(role == r or role in IMPLIES[r] for r in self.roles)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class TokenEntry(_Model):
    """One line of ``tokens.yaml``: a token's SHA-256, its user and roles."""

    sha256: str
    user: str
    roles: tuple[Role, ...]

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        if not _SHA256_RE.fullmatch(v):
            raise ValueError("should be 64 lowercase hex digits (the token's SHA-256)")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not v:
            raise ValueError("should not be empty")
        if not v.isprintable():
            raise ValueError("should be printable text")
        return v

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: tuple[Role, ...]) -> tuple[Role, ...]:
        if not v:
            raise ValueError("give at least one role")
        return v


class TokensFile(_Model):
    """The whole ``tokens.yaml``."""

    tokens: tuple[TokenEntry, ...] = ()


def hash_token(token: str) -> str:
    """The lowercase hex SHA-256 of a token, as stored in ``tokens.yaml``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenTable:
    """The loaded tokens; :meth:`authenticate` maps a presented token to its principal.

    ``file_sha256`` is the SHA-256 of the file the table was read from (what
    ``tokens.reloaded`` records to show which file is in force)."""

    entries: tuple[TokenEntry, ...] = ()
    file_sha256: str | None = None

    def authenticate(self, token: str) -> Principal | None:
        """The principal for ``token``, or ``None`` when no entry matches.

        Every entry is compared, with :func:`hmac.compare_digest`, whether or not an
        earlier one matched, so the time taken does not depend on where (or whether)
        the token is found.
        """
        digest = hash_token(token).encode("ascii")
        found: TokenEntry | None = None
        for entry in self.entries:
            match = hmac.compare_digest(digest, entry.sha256.encode("ascii"))
            found = entry if match and found is None else found
        if found is None or not token:
            return None
        return Principal(found.user, frozenset(found.roles))


def parse_tokens(data: Any) -> TokenTable:
    """Validate parsed ``tokens.yaml`` data (``None``, an empty file, is an empty table)."""
    if data is None:
        return TokenTable()
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(
            "(top level)", f"the tokens file must be a YAML mapping, not a {type(data).__name__}")])
    try:
        parsed = TokensFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, TokensFile)) from None
    problems: list[ConfigProblem] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(parsed.tokens):
        if entry.sha256 in first:
            problems.append(ConfigProblem(
                f"tokens[{i}].sha256", f"the same token as tokens[{first[entry.sha256]}]"))
        first.setdefault(entry.sha256, i)
    if problems:
        raise ConfigError(problems)
    return TokenTable(parsed.tokens)


def load_tokens(path: Path) -> TokenTable:
    """Read and validate a tokens file.

    Raises :class:`ConfigError` whose problems name field paths such as
    ``tokens[2].roles[0]`` (or ``line N, column M`` for YAML errors); the paths are
    relative to the tokens file, so prefix them with its name when printing.
    """
    try:
        with path.open("rb") as f:  # bounded: /dev/zero or a runaway file is not read whole
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError([TOO_LARGE])
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), "not UTF-8 text")]) from None
    table = parse_tokens(load_yaml(text))
    return TokenTable(table.entries, hashlib.sha256(raw).hexdigest())


def load_tokens_file(path: Path | None) -> TokenTable | None:
    """:func:`load_tokens` for ``admin.tokens_file`` (``None``: no tokens file), with each
    problem's path prefixed by the file's, e.g. ``/etc/splitway/tokens.yaml: tokens[0].user``."""
    if path is None:
        return None
    try:
        return load_tokens(path)
    except ConfigError as exc:
        raise ConfigError([
            p if p.path == str(path) else ConfigProblem(f"{path}: {p.path}", p.message)
            for p in exc.problems]) from None


def token_changes(old: TokenTable | None, new: TokenTable | None) -> dict[str, Any] | None:
    """What a reload changed in the tokens, as ``tokens.reloaded`` details; ``None`` when
    nothing did. Users are named, tokens (and their hashes) never are: ``added`` and
    ``removed`` list the users whose tokens appeared or disappeared, ``changed`` those
    whose token kept its hash but not its user or roles."""
    if old == new:
        return None
    before = {e.sha256: e for e in old.entries} if old is not None else {}
    after = {e.sha256: e for e in new.entries} if new is not None else {}
    return {
        "configured": new is not None,
        "file_sha256": new.file_sha256 if new is not None else None,
        "tokens": len(after),
        "added": sorted({after[h].user for h in after.keys() - before.keys()}),
        "removed": sorted({before[h].user for h in before.keys() - after.keys()}),
        "changed": sorted({after[h].user for h in after.keys() & before.keys()
                           if after[h] != before[h]}),
    }


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts local connections (``localhost``, 127.0.0.0/8,
    ``::1``). Wildcards (``0.0.0.0``, ``::``) and other names are not."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def authorize(
    principal: Principal | None,
    required: Role | None,
    *,
    tokens_configured: bool,
    write: bool,
    exposed: bool = False,
) -> None:
    """Allow the call or raise why not.

    - Without a tokens file on a listener that is not loopback (``exposed``): every call
      raises :class:`ForbiddenError` (403) explaining that a tokens file is needed, since
      anyone on the network could otherwise read the audit log, exports and artifacts.
    - Without a tokens file (``tokens_configured=False``): reads are allowed without a
      token; every write raises :class:`ReadOnlyError` (403).
    - With one: no principal (no token, or a token that matched nothing) raises
      :class:`UnauthorizedError` (401); ``required=None`` admits any principal (e.g.
      commenting on a promotion); otherwise a principal without ``required`` raises
      :class:`ForbiddenError` (403).
    """
    if not tokens_configured and exposed:
        raise ForbiddenError(
            "the admin API listens on a non-loopback address without admin.tokens_file, so "
            "/api/v1 is closed: configure admin.tokens_file (splitway token create) or "
            "listen on loopback")
    if not tokens_configured:
        if write:
            raise ReadOnlyError(
                "the admin API is read-only: configure admin.tokens_file to allow changes")
        return
    if principal is None:
        raise UnauthorizedError("a valid bearer token is required")
    if required is not None and not principal.has(required):
        raise ForbiddenError(f"user {principal.user!r} does not have the {required} role")


def parse_bearer(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else ``None``.

    The scheme is case-insensitive; anything else (another scheme, no token, a token
    with white space in it) gives ``None``.
    """
    if header_value is None:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (no-op where ``fcntl`` is missing)."""
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _entry_line(entry: TokenEntry) -> str:
    roles = ", ".join(r.value for r in entry.roles)
    plain = re.fullmatch(r"[A-Za-z0-9_.@-]+", entry.user) and load_yaml(entry.user) == entry.user
    user = entry.user if plain else _quote(entry.user)
    return f"{{sha256: {entry.sha256}, user: {user}, roles: [{roles}]}}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _new_text(old: str | None, table: TokenTable, entry: TokenEntry) -> str:
    """The file's text with ``entry`` added: appended to the existing text when that
    parses back to the same entries plus the new one (so comments survive), else
    rewritten."""
    want = (*table.entries, entry)
    if old and old.strip():
        base = old if old.endswith("\n") else old + "\n"
        for indent in ("  ", ""):
            candidate = f"{base}{indent}- {_entry_line(entry)}\n"
            try:
                if parse_tokens(load_yaml(candidate)).entries == want:
                    return candidate
            except ConfigError:
                pass
    lines = "".join(f"  - {_entry_line(e)}\n" for e in want)
    text = f"# splitway admin API tokens: SHA-256 of each token, user, roles\ntokens:\n{lines}"
    if parse_tokens(load_yaml(text)).entries != want:  # pragma: no cover - a bug in _entry_line
        raise RuntimeError("tokens file would not read back as written")
    return text


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sys.platform != "win32":  # make the rename durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def create_token(path: Path, user: str, roles: Sequence[Role]) -> str:
    """Make a new token for ``user`` with ``roles``, add its SHA-256 to ``path``, return it.

    The token (``spw_`` + 43 URL-safe characters, 256 random bits) is returned once and
    stored nowhere. The file is created if missing; existing entries (and, when the
    entry can simply be appended, the file's comments) are kept. The write is atomic
    (temporary file + rename) and leaves the file with mode 0600; concurrent calls on
    the same file are serialized on POSIX.

    Raises ``ValueError`` for a bad ``user`` or ``roles``, :class:`ConfigError` when
    the existing file is invalid (it is then left untouched), ``OSError`` when the file
    or its directory cannot be read or written.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        entry = TokenEntry(sha256=hash_token(token), user=user, roles=tuple(roles))
    except ValidationError as exc:
        detail = "; ".join(str(p) for p in validation_problems(exc, TokenEntry))
        raise ValueError(detail) from None
    with _locked_dir(path.parent):
        try:
            old: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = None
        table = parse_tokens(load_yaml(old)) if old is not None else TokenTable()
        _write_atomically(path, _new_text(old, table, entry))
    return token
