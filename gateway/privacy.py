"""Noise from OpenDP, and what it means for accuracy.

The only module that imports OpenDP. Every released statistic is a vector of integers (counts,
or sums in whole multiples of a published granularity), so one vetted mechanism serves them
all: OpenDP's discrete Laplace on 64-bit integers under the L1 distance. No floating-point
noise, so no floating-point artefact can reveal the true value.

OpenDP 0.16 keeps even this mechanism behind its `contrib` feature (its proof is written but not
yet vetted); it is enabled here, and only here, and docs/privacy-model.md says so. The
`floating-point` and `honest-but-curious` features are never enabled.

Quantiles use OpenDP's report-noisy-min (`make_noisy_max`, negated, pure epsilon: exponential
noise, the permute-and-flip mechanism) on candidate scores the domain computes exactly from a
histogram (domain.aggregate.quantiles), calibrated the same way to their L-infinity sensitivity;
the candidates it is given are those that discrete Laplace coarse counts leave possible.

Calibration takes OpenDP's own privacy map as the authority: the scale is raised until the map
says the measurement costs at most the epsilon charged, so float rounding in `sensitivity /
epsilon` can never make a release cost more than its charge.

Long vectors are drawn in parts on a few threads (OpenDP releases the GIL while it draws): the
noise on each value is independent and of one scale, so the parts together have exactly the
distribution of one call on the whole vector, and that call's map is the charge.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import opendp.prelude as dp

from gateway.domain.budget import MICRO
from gateway.domain.canonical_json import LARGEST_EXACT_INT
from gateway.errors import InternalError

dp.enable_features("contrib")

_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Noised:
    values: tuple[int, ...]
    scale: float
    """Scale of the discrete Laplace noise added to each value (in the statistic's units)."""


_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""OpenDP's samplers release the GIL while they draw, so independent draws run side by side."""
_SPLIT_FROM = 256
"""Vectors this long are drawn in parts on the pool: each draw costs OpenDP about 15
microseconds (most of it system calls), a call about 170."""
_pool: tuple[int, ThreadPoolExecutor] | None = None
"""The pool and the process that made it."""
_pool_lock = threading.Lock()


def _drawing_pool() -> ThreadPoolExecutor:
    """This process's pool: a process forked from one that used its pool gets its own (the
    parent's threads do not exist in the child, so the parent's pool would never run anything)."""
    global _pool  # noqa: PLW0603 - one pool a process, made on first use
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(_THREADS, thread_name_prefix="veilgate-noise"))
        return _pool[1]


@lru_cache(maxsize=1024)
def _mechanism(scale: float) -> Any:
    """Built from public parameters only, so it is reused across queries (about 0.3 ms each)."""
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


@lru_cache(maxsize=1024)
def calibrate(sensitivity: int, micro_epsilon: int) -> float:
    """The smallest scale found for which OpenDP's privacy map gives at most the epsilon."""
    if sensitivity < 1 or micro_epsilon < 1:
        raise InternalError("calibration needs a positive sensitivity and epsilon (this is a bug)")
    epsilon = Decimal(micro_epsilon) / MICRO
    scale = float(Decimal(sensitivity) / epsilon)
    for _ in range(64):
        if Decimal(_mechanism(scale).map(sensitivity)) <= epsilon:
            return scale
        scale = math.nextafter(scale, math.inf)
    raise InternalError("the mechanism could not be calibrated (this is a bug)")


def add_noise(values: Sequence[int] | npt.NDArray[np.int64], sensitivity: int, micro_epsilon: int) -> Noised:
    """Discrete Laplace noise on every value: one release of the whole vector, epsilon-DP.
    A numpy vector of 64-bit integers goes to OpenDP as it is (a list is checked and converted
    value by value first)."""
    if isinstance(values, np.ndarray):
        if values.dtype != np.int64 or values.ndim != 1:
            raise InternalError("statistics must be a vector of 64-bit integers (this is a bug)")
        held = values
    else:
        # SECURITY: a sum past 64 bits (millions of rows near a bound of 10^12 units) is clamped,
        # not refused: a refusal after the data were read told, without noise, whether a chosen
        # subset's sum passed 2^63. Clamping moves neighbouring statistics no further apart, so
        # the sensitivity holds (OpenDP's own sums saturate alike).
        held = np.asarray([min(max(v, -_INT64), _INT64) for v in values], dtype=np.int64)
    scale = calibrate(sensitivity, micro_epsilon)
    if not held.size:
        return Noised((), scale)
    mechanism = _mechanism(scale)
    if held.size < _SPLIT_FROM:
        return Noised(tuple(_exact_in_json(int(v)) for v in mechanism(held)), scale)
    # Independent noise of one scale on every value: drawn in parts side by side, the vector's
    # noise has exactly the distribution of one call's, so the release and its charge (OpenDP's
    # map of this mechanism on the whole vector) are the same.
    parts = np.array_split(held, _THREADS)
    drawn = list(_drawing_pool().map(mechanism, parts))
    return Noised(tuple(_exact_in_json(int(v)) for part in drawn for v in part), scale)


def _exact_in_json(value: int) -> int:
    """A released value JSON carries exactly (post-processing: no privacy cost). A larger one
    failed the receipt's canonical JSON after the charge was made."""
    return max(-LARGEST_EXACT_INT, min(value, LARGEST_EXACT_INT))


@lru_cache(maxsize=256)
def _selector(scale: float) -> Any:
    """Report-noisy-min over scores that may each move either way (not monotonic)."""
    space = dp.vector_domain(dp.atom_domain(T="u64")), dp.linf_distance(T="u64", monotonic=False)
    return dp.m.make_noisy_max(*space, dp.max_divergence(), scale=scale, negate=True)


@lru_cache(maxsize=1024)
def calibrate_selection(sensitivity: int, micro_epsilon: int) -> float:
    """The smallest scale found for which OpenDP's map of report-noisy-min, with scores that move
    by at most `sensitivity`, gives at most the epsilon (2 sensitivity / epsilon, rounded up)."""
    if sensitivity < 1 or micro_epsilon < 1:
        raise InternalError("calibration needs a positive sensitivity and epsilon (this is a bug)")
    epsilon = Decimal(micro_epsilon) / MICRO
    scale = float(2 * Decimal(sensitivity) / epsilon)
    for _ in range(64):
        if Decimal(_selector(scale).map(sensitivity)) <= epsilon:
            return scale
        scale = math.nextafter(scale, math.inf)
    raise InternalError("the selection could not be calibrated (this is a bug)")


def select_min(scores: npt.NDArray[np.uint64], sensitivity: int, micro_epsilon: int) -> int:
    """The index of a low score, chosen by report-noisy-min: one epsilon-DP release. OpenDP's
    permute-and-flip tries candidates in random order until one is accepted, so its time grows
    with the candidates whose score is far from the lowest (about 3 microseconds each)."""
    if scores.dtype != np.uint64 or scores.ndim != 1 or not scores.size:
        raise InternalError("scores must be a non-empty vector of 64-bit unsigned integers (this is a bug)")
    return int(_selector(calibrate_selection(sensitivity, micro_epsilon))(scores))


def select_min_each(scores: Sequence[npt.NDArray[np.uint64]], sensitivity: int, micro_epsilon: int) -> list[int]:
    """`select_min` on each vector (each its own cell's release: disjoint rows, parallel
    composition), in order. OpenDP draws each one's noise by itself, about 3 microseconds a
    candidate, so a quantile over tens of cells runs them on up to four threads (measured
    1.6 x faster on two cores)."""
    if len(scores) < 2:
        return [select_min(s, sensitivity, micro_epsilon) for s in scores]
    return list(_drawing_pool().map(lambda s: select_min(s, sensitivity, micro_epsilon), scores))


@dataclass(frozen=True, slots=True)
class Selected:
    counts: dict[str, int]
    """Noisy counts of the keys that cleared the threshold."""
    scale: float
    threshold: int


@lru_cache(maxsize=256)
def _threshold_mechanism(scale: float, threshold: int) -> Any:
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)


@lru_cache(maxsize=256)
def calibrate_threshold(max_rows: int, micro_epsilon: int, nano_delta: int) -> tuple[float, int]:
    """Scale and the smallest threshold for which OpenDP's map of a count by key, where one unit
    adds at most `max_rows` rows spread over at most `max_rows` keys, gives at most (epsilon, delta)."""
    epsilon = Decimal(micro_epsilon) / MICRO
    delta = Decimal(nano_delta) / 1_000_000_000
    scale = calibrate(max_rows, micro_epsilon)
    distance = (max_rows, max_rows, max_rows)

    def fits(threshold: int) -> bool:
        spent_e, spent_d = _threshold_mechanism(scale, threshold).map(distance)
        return Decimal(spent_e) <= epsilon and Decimal(spent_d) <= delta

    low, high = max_rows, max_rows
    while not fits(high):
        low, high = high, high * 2
        if high > 2**52:
            raise InternalError("no threshold meets this delta (this is a bug)")
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return scale, high


def select_keys(counts: dict[str, int], max_rows: int, micro_epsilon: int, nano_delta: int) -> Selected:
    """Noisy counts of the keys whose noisy count clears the threshold; every other key is withheld."""
    scale, threshold = calibrate_threshold(max_rows, micro_epsilon, nano_delta)
    released = _threshold_mechanism(scale, threshold)(counts) if counts else {}
    return Selected({str(k): int(v) for k, v in released.items()}, scale, threshold)


def tail(scale: float, k: int) -> float:
    """P(|X| > k) for discrete Laplace noise X with this scale: 2 r^(k+1) / (1 + r), r = e^(-1/scale)."""
    r = math.exp(-1.0 / scale)
    return 2.0 * r ** (k + 1) / (1.0 + r)


def half_width(scale: float, alpha: float) -> int:
    """The smallest k with P(|X| > k) <= alpha: value ± k covers the true value with 1 - alpha."""
    if not 0 < alpha < 1:
        raise InternalError("alpha must lie in (0, 1) (this is a bug)")
    r = math.exp(-1.0 / scale)
    guess = max(0, math.ceil(math.log(alpha * (1 + r) / 2) / math.log(r)) - 1) if r > 0 else 0
    while guess > 0 and tail(scale, guess - 1) <= alpha:
        guess -= 1
    while tail(scale, guess) > alpha:
        guess += 1
    return guess
