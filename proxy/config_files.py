"""The files a config names — ``tls.cert``, ``tls.key``, ``admin.tokens_file`` — read and
checked the same way by ``splitway check`` and ``splitway run``.

Before, ``check`` validated the config alone, so a missing certificate or tokens file
passed it and then failed ``run``: the TLS one as an OS error that named no file. Now
both call :func:`load_config_files`, and every problem is one line naming the field::

    tls.cert: file not found: /etc/splitway/cert.pem
    tls.key: does not match the certificate in tls.cert
    admin.tokens_file: /etc/splitway/tokens.yaml: tokens[0].roles[0]: ...

``splitway check --no-files`` skips this (a CI job checking a config whose certificate and
tokens live only on the servers).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from control.auth import TokenTable, load_tokens
from proxy.config import TLS, Settings
from proxy.errors import ConfigError, ConfigProblem


@dataclass(frozen=True, slots=True)
class ConfigFiles:
    """What the files hold: the listener's TLS context and the admin API's tokens
    (``None`` when the config names no such file)."""

    tls: ssl.SSLContext | None
    tokens: TokenTable | None


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _Encrypted


def file_problem(field: str, path: Path, marker: bytes | None = None) -> ConfigProblem | None:
    """Why ``path`` (the value of ``field``) cannot be used, if it cannot: missing,
    unreadable, a directory, or (with ``marker``) not containing it."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 20)
    except FileNotFoundError:
        return ConfigProblem(field, f"file not found: {path}")
    except IsADirectoryError:
        return ConfigProblem(field, f"a directory, not a file: {path}")
    except OSError as exc:
        return ConfigProblem(field, f"cannot read {path}: {exc.strerror or exc}")
    if marker is not None and marker not in head:
        what = marker.decode().strip("-")
        return ConfigProblem(field, f"no PEM {what.removeprefix('BEGIN ').lower()} in {path}")
    return None


def tls_context(tls: TLS) -> ssl.SSLContext:
    """The server-side TLS context for ``tls``; :class:`ConfigError` naming the field."""
    problems = [p for p in (file_problem("tls.cert", tls.cert, b"-----BEGIN CERTIFICATE"),
                            file_problem("tls.key", tls.key, b"PRIVATE KEY-----"))
                if p is not None]
    if problems:
        raise ConfigError(problems)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.cert, tls.key, password=_no_password)
    except _Encrypted:
        raise ConfigError([ConfigProblem(
            "tls.key", f"{tls.key} is encrypted; give an unencrypted key (file mode 0600)",
        )]) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError([ConfigProblem(
                "tls.key", f"{tls.key} does not match the certificate in {tls.cert}")]) from None
        raise ConfigError([ConfigProblem(
            "tls", f"cannot load {tls.cert} with {tls.key}: {exc.reason or exc}")]) from None
    return ctx


def load_config_files(settings: Settings) -> ConfigFiles:
    """Read the TLS and tokens files ``settings`` names (already absolute: the loader
    resolves them); :class:`ConfigError` lists every problem at once."""
    problems: list[ConfigProblem] = []
    tls: ssl.SSLContext | None = None
    tokens: TokenTable | None = None
    if settings.tls is not None:
        try:
            tls = tls_context(settings.tls)
        except ConfigError as exc:
            problems += exc.problems
    path = settings.admin.tokens_file
    if path is not None:
        missing = file_problem("admin.tokens_file", path)
        if missing is not None:
            problems.append(missing)
        else:
            try:
                tokens = load_tokens(path)
            except ConfigError as exc:  # paths inside the tokens file: prefix the file's
                problems += [ConfigProblem(
                    "admin.tokens_file",
                    f"{path}: {p.message}" if p.path == str(path) else f"{path}: {p}")
                    for p in exc.problems]
    if problems:
        raise ConfigError(problems)
    return ConfigFiles(tls, tokens)
