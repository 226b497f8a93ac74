"""Synthetic traffic for the rollout simulator (pure, vectorised with numpy).

What one arm of a route does over an interval of simulated time, as the rollout judge
sees it — an :class:`~proxy.rollout.analysis.Arm` built exactly as the controller builds one
from a snapshot delta (:func:`proxy.rollout.controller.arm`):

* **requests** arrive as a Poisson process: an arm with weight ``w`` % of a route at ``rps``
  gets ``Poisson(rps · w/100 · dt)`` requests in ``dt`` seconds. (Rounding ``rps · w · dt``
  per interval would give a 1 % arm of a 50 req/s route no request at all in half-second
  ticks, and would hide the count noise real traffic has.)
* **errors** are ``Binomial(requests, error_rate)``.
* **latencies** are lognormal with the given median and σ (``exp(ln median + σ·Z)``); the
  candidate's are scaled, then shifted (``x · scale + add_ms``). Failed requests get a
  latency from the same distribution, because the proxy records the duration of every
  judged response, 5xx included (:meth:`proxy.observe.VariantStats.record`).
* each latency goes through the proxy's own conversions — seconds rounded to whole
  microseconds and clamped to the histogram's range (``proxy.observe._to_us``), then the
  HdrHistogram bucket (1 us .. 1 h, 3 significant digits) — and is reported as the bucket's
  highest equivalent value in ms, the values :func:`proxy.observe.buckets_ms` gives the
  judge, so the judge's bucket-error accounting applies unchanged.

The bucket index is HdrHistogram's own formula evaluated on numpy arrays (hdrh computes it
one value at a time in Python); a test records the same values into a real
:class:`~proxy.observe.VariantStats` and compares the buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from proxy.observe import HIGHEST_US, new_histogram
from proxy.rollout.analysis import Arm

# Above this many samples one np.bincount over all 23,552 counters beats sorting them.
_BINCOUNT_FROM = 4000
# Latencies drawn at once (8 MB of float64): a long interval at a high rate is chunked.
_CHUNK = 1 << 20

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class ArmModel:
    """How one arm behaves: error rate and latency distribution (lognormal with median
    ``median_ms`` and shape ``sigma``, then ``· scale + add_ms``)."""

    error_rate: float
    median_ms: float
    sigma: float
    scale: float = 1.0
    add_ms: float = 0.0

    def __post_init__(self) -> None:
        # ``not (a <= x <= b)`` rather than ``x < a or x > b``: NaN fails it too.
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error rate {self.error_rate:g} is not between 0 and 1")
        if not 0.0 < self.median_ms < math.inf:
            raise ValueError(f"median latency {self.median_ms:g} ms is not a positive number")
        if not 0.0 < self.sigma < math.inf:
            raise ValueError(f"latency sigma {self.sigma:g} is not a positive number")
        if not 0.0 < self.scale < math.inf:
            raise ValueError(f"latency scale {self.scale:g} is not a positive number")
        if not 0.0 <= self.add_ms < math.inf:
            raise ValueError(f"added latency {self.add_ms:g} ms is not a number >= 0")

    def latencies_ms(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` latencies in ms (continuous, before the proxy's rounding)."""
        z = rng.standard_normal(n)
        z *= self.sigma
        z += math.log(self.median_ms)
        with np.errstate(over="ignore"):  # a huge sigma overflows to inf: clamped later
            x: FloatArray = np.exp(z, out=z)
            if self.scale != 1.0:
                x *= self.scale
            if self.add_ms:
                x += self.add_ms
        return x


@lru_cache(maxsize=1)
def _layout() -> tuple[int, int, int, int, int]:
    h = new_histogram()
    return (h.sub_bucket_mask, h.unit_magnitude, h.sub_bucket_half_count_magnitude,
            h.sub_bucket_half_count, h.counts_len)


@lru_cache(maxsize=1)
def _highest_ms() -> FloatArray:
    """Each HdrHistogram counter's reported value in ms: its highest equivalent value
    (hdrh's ``get_value_from_index`` and ``get_highest_equivalent_value``, vectorised)."""
    _, unit, half_mag, half_count, length = _layout()
    i = np.arange(length, dtype=np.int64)
    bucket = (i >> half_mag) - 1
    sub = (i & (half_count - 1)) + half_count
    first = bucket < 0  # the first bucket holds its lower half too
    sub[first] -= half_count
    bucket[first] = 0
    lowest = sub << (bucket + unit)
    highest = lowest + (np.int64(1) << (bucket + unit)) - 1
    out: FloatArray = highest / 1000.0
    return out


def to_us(latencies_ms: FloatArray) -> IntArray:
    """Whole microseconds as the proxy records a duration: ``round(seconds · 1e6)``
    (half to even, like Python's ``round``), clamped to 0 .. one hour."""
    with np.errstate(over="ignore"):  # inf and beyond are clamped to an hour, as there
        seconds = latencies_ms / 1000.0
        return np.clip(np.rint(seconds * 1e6), 0, HIGHEST_US).astype(np.int64)


def bucket_index(us: IntArray) -> IntArray:
    """HdrHistogram's counter index of each value (``_counts_index_for``, vectorised)."""
    mask, unit, half_mag, half_count, _ = _layout()
    # bit length of (v | mask) is hdrh's "64 - clz"; frexp's exponent is exactly that.
    pow2ceiling = np.frexp((us | mask).astype(np.float64))[1].astype(np.int64)
    bucket = pow2ceiling - unit - (half_mag + 1)
    sub = us >> (bucket + unit)
    out: IntArray = ((bucket + 1) << half_mag) + (sub - half_count)
    return out


def histogram(latencies_ms: FloatArray) -> tuple[tuple[float, int], ...]:
    """The (value in ms, count) pairs :func:`proxy.observe.buckets_ms` would report for a
    histogram holding these latencies, ascending."""
    if latencies_ms.size == 0:
        return ()
    idx = bucket_index(to_us(latencies_ms))
    if idx.size >= _BINCOUNT_FROM:
        counts = np.bincount(idx, minlength=0)
        where = np.flatnonzero(counts)
        counts = counts[where]
    else:
        where, counts = np.unique(idx, return_counts=True)
    return tuple(zip(_highest_ms()[where].tolist(), counts.tolist(), strict=True))


def latency_histogram(rng: np.random.Generator, model: ArmModel, n: int,
                      ) -> tuple[tuple[float, int], ...]:
    """The histogram of ``n`` latencies drawn from ``model``, generated in chunks so that
    memory stays bounded however long a look's interval is."""
    if n <= _CHUNK:
        return histogram(model.latencies_ms(rng, n))
    counts = np.zeros(_highest_ms().size, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        size = min(_CHUNK, n - start)
        counts += np.bincount(bucket_index(to_us(model.latencies_ms(rng, size))),
                              minlength=counts.size)
    where = np.flatnonzero(counts)
    return tuple(zip(_highest_ms()[where].tolist(), counts[where].tolist(), strict=True))


def arm(rng: np.random.Generator, model: ArmModel, requests: int, errors: int) -> Arm:
    """What an arm that served ``requests`` requests, ``errors`` of them failed, shows the
    judge: every request's latency is in the histogram, failed ones included."""
    if requests <= 0:
        return Arm(0, 0)
    return Arm(requests, errors, latency_histogram(rng, model, requests))
