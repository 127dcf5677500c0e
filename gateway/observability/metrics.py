"""Prometheus metrics of one gateway process, or of all the workers of `veilgate serve`.

SECURITY: every label value comes from a fixed vocabulary (methods, statuses, problem types, job
statuses, store names) or from a name an administrator chose (a route template, a catalogue
dataset), and is checked against that vocabulary or the names' pattern here, where it is used: a
value outside it is counted as `other`, and each label holds at most `MAX_VALUES` values, so a
caller can neither write into the exposition nor grow it.

Workers: with `PROMETHEUS_MULTIPROC_DIR` set before the process starts (`veilgate serve
--workers N` sets it for its workers), every worker writes its values to files there and a scrape
of any worker sums the files of all; otherwise the values live in this process's memory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.domain.names import NAME_PATTERN
from gateway.errors import VeilgateError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
MAX_VALUES = 200
"""Distinct values one label may take in one process before new ones count as `other`."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STORES = frozenset({"audit", "ledger", "budget", "release"})
_NAME = re.compile(NAME_PATTERN)
_JOB_STATUS = re.compile(r"^[a-z][a-z -]{0,39}$")
_ROUTE = re.compile(r"^/[A-Za-z0-9_./{}:-]{0,127}$")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics (not prometheus_client's global registry: nothing registers by accident)."""

REQUESTS = Counter(
    "veilgate_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "veilgate_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REFUSALS = Counter(
    "veilgate_refusals",
    "Problem responses, by problem type (the fixed vocabulary of docs/api.md).",
    ["reason"],
    registry=REGISTRY,
)
RELEASES = Counter(
    "veilgate_releases",
    "Signed results released, by catalogue dataset (`none`: a result about no dataset).",
    ["dataset"],
    registry=REGISTRY,
)
EPSILON = Counter(
    "veilgate_epsilon_spent",
    "Privacy budget (epsilon) spent by the results this installation released, by catalogue dataset.",
    ["dataset"],
    registry=REGISTRY,
)
COMMIT_BATCH = Histogram(
    "veilgate_commit_batch_size",
    "Items written by one group commit (one transaction), by store.",
    ["store"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "veilgate_commit_duration_seconds",
    "Time of one group commit from BEGIN to the end of COMMIT, by store.",
    ["store"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def _bounded(label: str, value: str) -> str:
    """`value`, unless `label` already holds `MAX_VALUES` others in this process."""
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= MAX_VALUES:
            return OTHER
        seen.add(value)
        return value


@functools.cache
def _problem_types() -> frozenset[str]:
    found: set[str] = set()
    pending: list[type[VeilgateError]] = [VeilgateError]
    while pending:
        cls = pending.pop()
        found.add(cls.type_slug)
        pending.extend(cls.__subclasses__())
    return frozenset(found | {"http-error"})


def route_label(template: object) -> str:
    """A route's template (`/v1/catalog/{dataset}`), never a path as a caller sent it."""
    if isinstance(template, str) and _ROUTE.fullmatch(template):
        return _bounded("route", template)
    return "(unmatched)" if template is None else OTHER


_request_children: dict[tuple[str, object, int], tuple[Any, Any]] = {}
"""The counter and histogram of each (method, template, status) seen: `labels()` once, not per request."""


def observe_request(method: str, template: object, status: int, seconds: float, problem: object) -> None:
    """One answered request; `problem` is the problem type it was refused with, if any."""
    key = (method, template if isinstance(template, str) else None, status)
    children = _request_children.get(key)
    if children is None:
        verb = method if method in METHODS else OTHER
        route = route_label(template)
        children = (
            REQUESTS.labels(verb, route, str(status) if 100 <= status < 600 else OTHER),
            REQUEST_SECONDS.labels(verb, route),
        )
        if len(_request_children) < 4 * MAX_VALUES:  # unbounded keys (odd methods) are not kept
            _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)
    if isinstance(problem, str):
        REFUSALS.labels(problem if problem in _problem_types() else OTHER).inc()


def dataset_label(dataset: object) -> str:
    if dataset is None:
        return "none"
    if isinstance(dataset, str):
        return _dataset_name_label(dataset)
    return OTHER


@functools.lru_cache(maxsize=MAX_VALUES * 2)
def _dataset_name_label(dataset: str) -> str:
    """Stable for each name (a name once counted stays counted, one refused stays `other`),
    so it is worked out once per name, not on every release."""
    return _bounded("dataset", dataset) if _NAME.fullmatch(dataset) else OTHER


def observe_release(dataset: object, epsilon: float) -> None:
    """One signed result released; `epsilon` is the budget it spent (0 for none)."""
    releases, spent = _release_series(dataset_label(dataset))
    releases.inc()
    if epsilon > 0:
        spent.inc(epsilon)


@functools.lru_cache(maxsize=MAX_VALUES + 2)
def _release_series(label: str) -> tuple[Counter, Counter]:
    """A release's two series for one dataset label (the labels are bounded): looked up once,
    not on every release."""
    return RELEASES.labels(label), EPSILON.labels(label)


def observe_commit(store: str, items: int, seconds: float) -> None:
    """One group commit of `items` items that took `seconds`."""
    name = store if store in STORES else OTHER
    COMMIT_BATCH.labels(name).observe(items)
    COMMIT_SECONDS.labels(name).observe(seconds)


class JobStates:
    """Jobs by status, read from the job store at each scrape: every replica's, not this one's."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("veilgate_jobs", "Jobs in the job store, by status.", labels=["state"])
        totals: dict[str, int] = {}
        for status, count in self._counts().items():
            state = status if _JOB_STATUS.fullmatch(status) else OTHER
            totals[state] = totals.get(state, 0) + count
        for state, count in sorted(totals.items()):
            family.add_metric([state], count)
        yield family


class _Scrape:
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = tuple(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(*extra: Collector) -> bytes:
    """The text exposition of this process (or, in multiprocess mode, of every worker), plus `extra`."""
    ours: Collector = REGISTRY
    if os.environ.get(MULTIPROCESS_ENV):
        ours = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    return generate_latest(_Scrape((ours, *extra)))


@contextlib.contextmanager
def shared_by_workers() -> Iterator[None]:
    """For worker processes started inside: they write their values to files of one directory, so
    a scrape of any worker answers for all. An operator's own `PROMETHEUS_MULTIPROC_DIR` is kept
    (emptied by whoever set it); otherwise a fresh directory is made and removed afterwards."""
    if os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="veilgate-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
