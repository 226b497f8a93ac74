"""Tokens, roles and the authorization rule (contract §7, §8)."""

from __future__ import annotations

import hashlib
import itertools
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import control.auth as auth
from control.auth import (
    Principal,
    Role,
    TokenTable,
    authorize,
    create_token,
    hash_token,
    load_tokens,
    parse_bearer,
    parse_tokens,
)
from proxy.errors import ConfigError, ForbiddenError, ReadOnlyError, UnauthorizedError

V, OP, AP, AD = Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN

# Written out by hand (not derived from control.auth.IMPLIES): which held role grants
# which required role.
GRANTS: dict[Role, set[Role]] = {
    V: {V},
    OP: {OP, V},
    AP: {AP},
    AD: {V, OP, AP, AD},
}

HOLDINGS: list[tuple[Role, ...]] = [(V,), (OP,), (AP,), (AD,), (AP, V), (OP, AP)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- roles and authorize ------------------------------------------------------------


def test_role_values() -> None:
    assert [r.value for r in Role] == ["viewer", "operator", "approver", "admin"]
    assert Role("approver") is AP and f"{AD}" == "admin"


@pytest.mark.parametrize("held", HOLDINGS, ids=lambda h: "+".join(h))
@pytest.mark.parametrize("required", list(Role), ids=str)
def test_principal_has(held: tuple[Role, ...], required: Role) -> None:
    expected = any(required in GRANTS[r] for r in held)
    assert Principal("u", frozenset(held)).has(required) is expected


CASES = list(itertools.product(
    [None, *HOLDINGS],          # principal: none (no/bad token) or one holding these roles
    [None, *Role],              # required role (None: any authenticated caller)
    [False, True],              # tokens_configured
    [False, True],              # write
))


def _expected(held: tuple[Role, ...] | None, required: Role | None, configured: bool,
              write: bool) -> type[Exception] | None:
    if not configured:
        return ReadOnlyError if write else None
    if held is None:
        return UnauthorizedError
    if required is None or any(required in GRANTS[r] for r in held):
        return None
    return ForbiddenError


@pytest.mark.parametrize(("held", "required", "configured", "write"), CASES)
def test_authorize_table(held: tuple[Role, ...] | None, required: Role | None,
                         configured: bool, write: bool) -> None:
    principal = None if held is None else Principal("alice", frozenset(held))
    expected = _expected(held, required, configured, write)
    if expected is None:
        authorize(principal, required, tokens_configured=configured, write=write)
    else:
        with pytest.raises(expected) as info:
            authorize(principal, required, tokens_configured=configured, write=write)
        assert type(info.value) is expected


def test_authorize_statuses_and_details() -> None:
    with pytest.raises(UnauthorizedError) as u:
        authorize(None, V, tokens_configured=True, write=False)
    with pytest.raises(ForbiddenError) as f:
        authorize(Principal("bob", frozenset({V})), OP, tokens_configured=True, write=True)
    with pytest.raises(ReadOnlyError) as r:
        authorize(None, OP, tokens_configured=False, write=True)
    assert (u.value.status, f.value.status, r.value.status) == (401, 403, 403)
    assert "bob" in f.value.detail and "operator" in f.value.detail
    assert "tokens_file" in r.value.detail


def test_table_covers_every_combination() -> None:
    assert len(CASES) == 7 * 5 * 2 * 2


# --- parse_bearer -------------------------------------------------------------------


@pytest.mark.parametrize(("header", "token"), [
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer ", None),
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER  abc ", "abc"),
    ("  Bearer spw_x-Y_z  ", "spw_x-Y_z"),
    ("Basic YWxpY2U6cHc=", None),
    ("Bearer a b", None),
    ("Token abc", None),
    ("Bearerabc", None),
])
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


# --- TokenTable ---------------------------------------------------------------------


def test_authenticate() -> None:
    table = parse_tokens({"tokens": [
        {"sha256": sha("t-alice"), "user": "alice", "roles": ["operator"]},
        {"sha256": sha("t-bob"), "user": "bob", "roles": ["approver", "viewer"]},
    ]})
    assert table.authenticate("t-alice") == Principal("alice", frozenset({OP}))
    assert table.authenticate("t-bob") == Principal("bob", frozenset({AP, V}))
    assert table.authenticate("t-carol") is None
    assert table.authenticate("t-alice ") is None
    assert table.authenticate(sha("t-alice")) is None  # the hash is not a token
    assert TokenTable().authenticate("t-alice") is None


def test_empty_token_never_authenticates() -> None:
    table = parse_tokens({"tokens": [{"sha256": sha(""), "user": "x", "roles": ["admin"]}]})
    assert table.authenticate("") is None


def test_authenticate_compares_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse_tokens({"tokens": [
        {"sha256": sha(f"t{i}"), "user": f"u{i}", "roles": ["viewer"]} for i in range(20)]})
    calls: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token in ("t0", "t19", "nope"):
        calls.clear()
        principal = table.authenticate(token)
        assert len(calls) == 20, token
        assert (principal is None) == (token == "nope")


def test_hash_token() -> None:
    assert hash_token("test") == (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")


# --- tokens.yaml --------------------------------------------------------------------

GOOD = sha("x")

MALFORMED = [
    ("sha-uppercase", f"tokens: [{{sha256: {GOOD.upper()}, user: a, roles: [viewer]}}]",
     "tokens[0].sha256: should be 64 lowercase hex digits"),
    ("sha-short", "tokens: [{sha256: abc, user: a, roles: [viewer]}]", "tokens[0].sha256: "),
    ("sha-missing", "tokens: [{user: a, roles: [viewer]}]", "tokens[0].sha256: required"),
    ("user-empty", f"tokens: [{{sha256: {GOOD}, user: '', roles: [viewer]}}]",
     "tokens[0].user: should not be empty"),
    ("user-missing", f"tokens: [{{sha256: {GOOD}, roles: [viewer]}}]", "tokens[0].user: "),
    ("roles-empty", f"tokens: [{{sha256: {GOOD}, user: a, roles: []}}]",
     "tokens[0].roles: give at least one role"),
    ("roles-unknown", f"tokens:\n  - {{sha256: {GOOD}, user: a, roles: [viewer, root]}}",
     "tokens[0].roles[1]: should be 'viewer', 'operator', 'approver' or 'admin'"),
    ("roles-not-list", f"tokens: [{{sha256: {GOOD}, user: a, roles: 7}}]",
     "tokens[0].roles: should be a list"),
    ("unknown-key", f"tokens: [{{sha256: {GOOD}, user: a, roles: [admin], token: s}}]",
     "tokens[0].token: unknown key 'token'"),
    ("second-entry", f"tokens:\n  - {{sha256: {GOOD}, user: a, roles: [admin]}}\n  - {{}}\n",
     "tokens[1].sha256: required"),
    ("duplicate-sha",
     f"tokens:\n  - {{sha256: {GOOD}, user: a, roles: [admin]}}\n"
     f"  - {{sha256: {GOOD}, user: b, roles: [viewer]}}\n",
     "tokens[1].sha256: the same token as tokens[0]"),
    ("tokens-not-list", "tokens: {a: 1}", "tokens: should be a list"),
    ("top-level-list", "- a\n", "(top level): the tokens file must be a YAML mapping"),
    ("top-level-typo", "token: []", "token: unknown key 'token'; did you mean 'tokens'?"),
    ("yaml-syntax", "tokens: [\n", "line 2, column 1: YAML syntax error"),
    ("duplicate-yaml-key", "tokens: []\ntokens: []\n", "line 2, column 1: duplicate key"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_malformed_tokens_files_name_the_field(tmp_path: Path, text: str,
                                               expected: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_tokens(path)
    lines = [str(p) for p in info.value.problems]
    assert any(line.startswith(expected) for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_load_tokens_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_tokens(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# no tokens yet\n", encoding="utf-8")
    assert load_tokens(empty).entries == ()
    empty.write_text("tokens: []\n", encoding="utf-8")
    assert load_tokens(empty).authenticate("anything") is None


# --- create_token -------------------------------------------------------------------


def test_create_token_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    alice = create_token(path, "alice", [OP])
    bob = create_token(path, "bob", [AP, V])
    root = create_token(path, "root@example.org", [AD])
    assert len({alice, bob, root}) == 3
    for token in (alice, bob, root):
        assert token.startswith("spw_") and len(token) == 4 + 43
    table = load_tokens(path)
    assert [e.user for e in table.entries] == ["alice", "bob", "root@example.org"]
    assert table.authenticate(alice) == Principal("alice", frozenset({OP}))
    assert table.authenticate(bob) == Principal("bob", frozenset({AP, V}))
    principal = table.authenticate(root)
    assert principal is not None and all(principal.has(r) for r in Role)
    assert table.authenticate(alice[:-1]) is None
    assert table.authenticate("spw_" + "A" * 43) is None
    text = path.read_text(encoding="utf-8")
    assert alice not in text and hash_token(alice) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]  # no temp files left


def test_create_token_keeps_entries_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "# team tokens\ntokens:\n"
        f"  - {{sha256: {sha('old')}, user: old, roles: [viewer]}}  # rotate in June\n",
        encoding="utf-8")
    path.chmod(0o644)
    token = create_token(path, "new user", [OP])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# team tokens\n") and "# rotate in June" in text
    table = load_tokens(path)
    assert table.authenticate("old") == Principal("old", frozenset({V}))
    assert table.authenticate(token) == Principal("new user", frozenset({OP}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


ZERO_INDENT = f"tokens:\n- {{sha256: {sha('z')}, user: z, roles: [admin]}}"


@pytest.mark.parametrize("existing", ["tokens: []\n", "", ZERO_INDENT])
def test_create_token_on_other_shapes(tmp_path: Path, existing: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(existing, encoding="utf-8")
    before = load_tokens(path).entries
    token = create_token(path, "u", [V])
    table = load_tokens(path)
    assert table.entries[:-1] == before
    assert table.authenticate(token) == Principal("u", frozenset({V}))


@pytest.mark.parametrize("user", ["null", "123", "yes", "1.5e3", 'say "hi"', "back\\slash",
                                  "ünïcode name", "#hash", "a: b", "- x", "[x]", "~"])
def test_create_token_user_names_round_trip(tmp_path: Path, user: str) -> None:
    path = tmp_path / "tokens.yaml"
    first = create_token(path, user, [V])
    second = create_token(path, user, [AD])
    table = load_tokens(path)
    assert table.authenticate(first) == Principal(user, frozenset({V}))
    assert table.authenticate(second) == Principal(user, frozenset({AD}))


def test_create_token_refuses_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: [{sha256: nothex, user: a, roles: [viewer]}]\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        create_token(path, "u", [V])
    assert path.read_text(encoding="utf-8").startswith("tokens: [{sha256: nothex")


@pytest.mark.parametrize(("user", "roles"), [("", [V]), ("a", []), ("a\nb", [V])])
def test_create_token_bad_arguments(tmp_path: Path, user: str, roles: list[Role]) -> None:
    with pytest.raises(ValueError, match=r"user|roles"):
        create_token(tmp_path / "tokens.yaml", user, roles)
    assert not (tmp_path / "tokens.yaml").exists()


def test_create_token_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda i: create_token(path, f"u{i}", [V]), range(40)))
    table = load_tokens(path)
    assert len(table.entries) == 40
    assert all(table.authenticate(t) is not None for t in tokens)
