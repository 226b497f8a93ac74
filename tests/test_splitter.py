"""SplitTable: exact shares, monotone and deterministic hashing, independence of routes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.splitter import SplitTable

KEYS = [f"user-{i}" for i in range(300)]


def within_4_sigma(hits: int, n: int, p: float) -> bool:
    sigma = math.sqrt(p * (1 - p) / n)
    return abs(hits / n - p) <= 4 * sigma


def hash_share(table: SplitTable, variant: str, n: int, prefix: str = "k") -> int:
    return sum(table.pick_hash(f"{prefix}{i}") == variant for i in range(n))


# --- build -----------------------------------------------------------------------------


def test_build_orders_variants_and_ignores_mapping_order() -> None:
    a = SplitTable.build("r", {"stable": 90, "canary": 10})
    b = SplitTable.build("r", {"canary": 10, "stable": 90})
    assert a.variants == ("canary", "stable")
    assert a.weights == (10.0, 90.0)
    assert a == b
    assert [a.pick_hash(k) for k in KEYS] == [b.pick_hash(k) for k in KEYS]
    assert a.pick_random(0.5) == b.pick_random(0.5)
    assert a.shares() == {"canary": 0.1, "stable": 0.9}


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": 0}, {"a": 0, "b": 0.0}, {"a": -1, "b": 2}, {"a": math.inf}, {"a": math.nan}],
)
def test_build_rejects_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SplitTable.build("r", weights)


# --- determinism -----------------------------------------------------------------------

GOLDEN = [
    ("sentiment", {"stable": 90, "canary": 10},
     {"user-1": "stable", "user-2": "canary", "user-3": "canary", "alice": "stable",
      "bob": "stable", "carol": "stable", "dave": "stable", "erin": "stable"}),
    ("sentiment", {"stable": 50, "canary": 50},
     {"user-1": "stable", "user-2": "canary", "user-3": "canary", "alice": "stable",
      "bob": "canary", "carol": "stable", "dave": "canary", "erin": "stable"}),
    ("fraud", {"a": 1, "b": 2, "c": 3},
     {"user-1": "b", "user-2": "a", "user-3": "c", "alice": "b", "bob": "c",
      "carol": "c", "dave": "a", "erin": "c"}),
]


@pytest.mark.parametrize(("salt", "weights", "expected"), GOLDEN)
def test_golden_assignments(salt: str, weights: dict[str, float], expected: dict[str, str]) -> None:
    # Pinned values: every replica, restart and release must keep these, so a change of
    # hash function or key derivation fails here rather than silently moving users.
    table = SplitTable.build(salt, weights)
    assert {k: table.pick_hash(k) for k in expected} == expected
    assert {k: table.pick_hash(k.encode()) for k in expected} == expected


weights_st = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 100), min_size=1
).filter(lambda w: any(v > 0 for v in w.values()))


@settings(max_examples=50, deadline=None)
@given(salt=st.text(min_size=1, max_size=20), weights=weights_st,
       key=st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_deterministic(salt: str, weights: dict[str, int], key: str | bytes) -> None:
    first = SplitTable.build(salt, weights).pick_hash(key)
    assert SplitTable.build(salt, dict(weights)).pick_hash(key) == first
    assert weights[first] > 0


# --- monotonicity ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(salt=st.sampled_from(["sentiment", "fraud", "r"]), weights=weights_st,
       data=st.data())
def test_raising_a_weight_only_moves_keys_to_it(
    salt: str, weights: dict[str, int], data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(sorted(weights)), label="target")
    raised = dict(weights)
    raised[target] += data.draw(st.integers(1, 1000), label="increase")
    before = SplitTable.build(salt, weights)
    after = SplitTable.build(salt, raised)
    for key in KEYS:
        old, new = before.pick_hash(key), after.pick_hash(key)
        if old == target:
            assert new == target, key  # nobody leaves the grown variant
        if new != old:
            assert new == target, key  # and whoever moves, moves to it


def test_canary_growth_keeps_its_first_users() -> None:
    small = SplitTable.build("sentiment", {"stable": 95, "canary": 5})
    large = SplitTable.build("sentiment", {"stable": 90, "canary": 10})
    early = {k for k in (f"u{i}" for i in range(5000)) if small.pick_hash(k) == "canary"}
    assert early
    assert all(large.pick_hash(k) == "canary" for k in early)


# --- shares ----------------------------------------------------------------------------


def test_random_grid_shares_are_exact() -> None:
    table = SplitTable.build("r", {"a": 93, "z": 0, "b": 7})
    n = 10_000
    picks = [table.pick_random(i / n) for i in range(n)]
    assert abs(picks.count("b") - 700) <= 1
    assert "z" not in picks
    assert table.pick_random(0.0) == "a"
    assert table.pick_random(math.nextafter(1.0, 0.0)) == "b"


def test_random_never_picks_zero_weight_at_the_edges() -> None:
    table = SplitTable.build("r", {"a": 0, "b": 1, "c": 0})
    for u in (0.0, 1e-300, 0.5, math.nextafter(1.0, 0.0)):
        assert table.pick_random(u) == "b"


def test_random_draws_93_7() -> None:
    table = SplitTable.build("r", {"a": 93, "b": 7})
    draws = np.random.default_rng(20240601).random(20_000)
    hits = sum(table.pick_random(float(u)) == "b" for u in draws)
    assert within_4_sigma(hits, 20_000, 0.07)


def test_hash_80_20() -> None:
    table = SplitTable.build("r", {"a": 80, "b": 20})
    assert within_4_sigma(hash_share(table, "b", 5_000), 5_000, 0.20)


@pytest.mark.parametrize(("minor", "major"), [(7, 93), (0.5, 99.5)])
def test_hash_small_shares_are_not_rounded(minor: float, major: float) -> None:
    # 7% means 7% and 0.5% means 0.5%: no 1%-bucket quantisation. At n = 200,000, 4
    # sigma at 0.5% is 0.063 points, far below the 0.5-point error a bucket would make.
    table = SplitTable.build("r", {"a": major, "b": minor})
    n = 200_000
    p = minor / (minor + major)
    assert within_4_sigma(hash_share(table, "b", n), n, p)


@pytest.mark.parametrize("w", [0.5, 0.3, 0.1])
def test_routes_with_equal_weights_assign_independently(w: float) -> None:
    one = SplitTable.build("sentiment", {"x": w, "y": 1 - w})
    two = SplitTable.build("fraud", {"x": w, "y": 1 - w})
    n = 20_000
    agree = sum(one.pick_hash(f"k{i}") == two.pick_hash(f"k{i}") for i in range(n))
    assert within_4_sigma(agree, n, w * w + (1 - w) * (1 - w))


def test_zero_weight_variant_never_hashed_to() -> None:
    table = SplitTable.build("r", {"a": 1, "b": 0, "c": 1})
    assert all(table.pick_hash(f"k{i}") != "b" for i in range(5_000))
