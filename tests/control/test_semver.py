"""SemVer 2.0 parsing and ordering (control.versions): properties and concrete cases."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.versions import (
    check_name,
    check_version,
    is_valid_name,
    newest_first,
    parse_version,
    sort_key,
)
from proxy.errors import InvalidInputError

numeric = st.integers(min_value=0, max_value=10**6)
alnum_id = st.from_regex(r"[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*", fullmatch=True).filter(
    lambda s: 0 < len(s) <= 8)
pre_id = st.one_of(numeric.map(str), alnum_id)
build_id = st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True)


@st.composite
def versions(draw: st.DrawFn) -> str:
    core = ".".join(str(draw(st.integers(0, 12))) for _ in range(3))
    pre = draw(st.lists(pre_id, max_size=3))
    build = draw(st.lists(build_id, max_size=2))
    return core + ("-" + ".".join(pre) if pre else "") + ("+" + ".".join(build) if build else "")


def reference_precedence(a: str, b: str) -> int:
    """SemVer 2.0 §11, written out independently of the ``semver`` package."""

    def split(v: str) -> tuple[list[int], list[str]]:
        v = v.split("+", 1)[0]
        core, _, pre = v.partition("-")
        return [int(x) for x in core.split(".")], pre.split(".") if pre else []

    (ca, pa), (cb, pb) = split(a), split(b)
    if ca != cb:
        return -1 if ca < cb else 1
    if not pa or not pb:
        return (not pa) - (not pb)
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


def cmp(a: str, b: str) -> int:
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)


@given(versions())
def test_generated_versions_parse(v: str) -> None:
    assert str(parse_version(v)) == v


@given(versions(), versions())
def test_order_is_consistent_with_precedence(a: str, b: str) -> None:
    ref = reference_precedence(a, b)
    if ref != 0:
        assert cmp(a, b) == ref
    else:  # equal precedence (build metadata only): ties broken, never contradicted
        assert (cmp(a, b) == 0) == (a == b)


@given(versions(), versions(), versions())
def test_order_is_total(a: str, b: str, c: str) -> None:
    assert cmp(a, b) == -cmp(b, a)  # antisymmetric
    assert (cmp(a, b) == 0) == (a == b)  # equal keys only for equal strings
    for x, y, z in itertools.permutations((a, b, c)):
        if cmp(x, y) <= 0 and cmp(y, z) <= 0:
            assert cmp(x, z) <= 0  # transitive


@given(st.lists(versions(), max_size=12))
def test_newest_first_is_sorted(vs: list[str]) -> None:
    out = newest_first(vs)
    assert sorted(out) == sorted(vs)
    assert all(reference_precedence(x, y) >= 0 for x, y in itertools.pairwise(out))


@pytest.mark.parametrize(("higher", "lower"), [
    ("1.10.0", "1.9.0"),
    ("1.9.0", "1.9.0-rc.1"),
    ("1.10.0", "1.9.0-rc.1"),
    ("2.0.0", "1.99.99"),
    ("1.0.0-rc.10", "1.0.0-rc.2"),
    ("1.0.0-alpha", "1.0.0-1"),
    ("1.0.0+build.2", "1.0.0+build.1"),  # tie broken by the build string
    ("1.0.0+a", "1.0.0"),
])
def test_concrete_order(higher: str, lower: str) -> None:
    assert sort_key(higher) > sort_key(lower)


def test_the_spec_example_chain() -> None:
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
    assert newest_first(reversed(chain)) == chain[::-1]
    assert newest_first(["1.9.0-rc.1", "1.10.0", "1.9.0"]) == ["1.10.0", "1.9.0", "1.9.0-rc.1"]


@pytest.mark.parametrize("bad", [
    "1.0", "01.0.0", "1.0.0-", "1.0.0;rm", "v1.0.0", " 1.0.0", "1.0.0\n", "1.0.0-01",
    "1.0.0+", "../1.0.0", "1.0.0/../x", "", "1." * 70 + "0",
])
def test_bad_versions_are_422(bad: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        check_version(bad, "lineage.parent")
    assert err.value.status == 422 and err.value.field == "lineage.parent"


@pytest.mark.parametrize("bad", [
    "../etc", "a/b", "A", "x;drop table", "%2e%2e", "..", ".", "a" * 65, "", "a b",
    "abc\n", "-a", "é",
])
def test_bad_names_are_422(bad: str) -> None:
    assert not is_valid_name(bad)
    with pytest.raises(InvalidInputError) as err:
        check_name(bad)
    assert err.value.field == "model"


def test_good_names() -> None:
    for good in ("a", "sentiment", "bert-base.v2_1", "0", "a" * 64):
        assert check_name(good) == good
