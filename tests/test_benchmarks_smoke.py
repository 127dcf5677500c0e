"""Every script in benchmarks/ runs at a tiny scale here, so none can rot unnoticed.

Each runs as its users run it (a subprocess with its command-line options) and its report is
checked for the figures it promises. The wrk-driven load benchmarks need wrk for their runs; their
other parts (the adapted policy bundle, the request bodies) are exercised without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import demo_data
from gateway.policy import load_bundle
from gateway.services import release, verification

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


def _run(script: str, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_benchmark_has_a_smoke_test() -> None:
    tested = {"aggregate.py", "accuracy.py", "audit_log.py", "registration.py", "load.py", "spark_engine.py"}
    tested |= {"verify_load.py", "score_load.py", "observability.py", "request_cpu.py", "request_steps.py"}
    assert {p.name for p in BENCHMARKS.glob("*.py")} <= tested


def test_aggregate_releases_every_measure() -> None:
    out = _run("aggregate.py", "--scale", "0.02", "--repeat", "1")
    for measure in ("count", "sum", "mean"):
        assert any(line.startswith(measure) and line.rstrip().endswith("x") for line in out.splitlines()), out


def test_audit_log_reports_both_ratios() -> None:
    out = _run("audit_log.py", "--events", "40", "--requests", "40", "--concurrency", "4")
    assert "group commit" in out and "durable leaf each" in out
    assert out.count("ratio") == 2


def test_spark_engine_reports_its_ratio() -> None:
    from gateway.engine.spark.session import missing_requirement

    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    # Two templates are enough to keep the script working; the equality tests run every template.
    out = _run(
        "spark_engine.py", "--rows", "5000", "--repeat", "1", "--master", "local[1]", "--templates", "2", timeout=300
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert report["rows"] == 5000 and report["ratio"] > 0 and report["templates"] == 2


def test_registration_reports_time_and_memory() -> None:
    out = _run("registration.py", "--rows", "20000", "--memory-limit", "64MB", "--rounds", "3")
    assert out.count("ratio registration / baseline") == 3
    report = json.loads(out.strip().splitlines()[-1])
    assert report["rows"] == 20000 and report["rounds"] == 3
    assert report["peak_rss_mb"] > 0 and report["time_ratio"] > 0 and report["cpu_ratio"] > 0
    assert report["time_ratio"] == sorted(report["time_ratios"])[1]  # the median round's


def test_accuracy_ends_with_its_json_line() -> None:
    out = _run("accuracy.py", "--rows", "20000", "--releases", "3", timeout=120)
    figures = json.loads(out.strip().splitlines()[-1])
    for measure in ("count", "sum", "mean", "median"):
        assert figures[measure]["median_rel_error_pct"] >= 0
        assert 0 <= figures[measure]["coverage"] <= 1
    assert figures["median_time_ratio"] > 0


def test_observability_ends_with_its_json_line() -> None:
    out = _run("observability.py", "--requests", "200", "--rounds", "1")
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["requests"] == 200
    assert figures["bare_us"] > 0 and figures["metrics_us"] > 0 and figures["ratio"] > 0
    assert figures["scrape_ms"] > 0


def test_request_cpu_ends_with_its_json_line() -> None:
    out = _run(
        "request_cpu.py",
        *("--requests", "40", "--rounds", "1", "--concurrency", "4", "--scale", "0.02", "--steps"),
        timeout=180,
    )
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["requests"] == 40 and figures["database"] == "sqlite"
    assert figures["healthz_us"] > 0 and figures["verify_us"] > 0 and figures["score_us"] > 0
    assert figures["verify_ratio"] > 0 and figures["score_ratio"] > 0
    common = {"authentication", "prepare", "  keyed hashes", "pending release", "receipt", "  signature (Ed25519, JWS)"}
    assert common | {"  validation", "  lookup and answer"} <= set(figures["steps_us"]["verify"]), out
    assert common | {"  lookup and score"} <= set(figures["steps_us"]["score"]), out
    assert all(us > 0 for route in figures["steps_us"].values() for us in route.values()), out


def test_request_steps_put_back_what_they_timed() -> None:
    """The timers wrap the app's own functions only while installed, and count each call."""
    request_steps = _load_module("request_steps")
    steps = request_steps.Steps()  # type: ignore[attr-defined]
    prepare, complete = verification.prepare, release.PendingRelease.complete
    with steps.installed():
        assert verification.prepare is not prepare and release.PendingRelease.complete is not complete
        verification.canonical_text(["a"])
    assert verification.prepare is prepare and release.PendingRelease.complete is complete
    assert steps.calls["  canonical texts"] == 1 and steps.nanoseconds["  canonical texts"] > 0


def _load_module(name: str) -> object:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_load_benchmarks_prepare_a_valid_bundle_and_bodies(tmp_path: Path) -> None:
    """The parts that do not need wrk: the adapted bundle passes the policy check, and the
    request bodies are well-formed and numerous enough to cycle through."""
    verify_load = _load_module("verify_load")
    score_load = _load_module("score_load")
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    verify_load.raise_limits(tmp_path / "policies")  # type: ignore[attr-defined]
    bundle = load_bundle(tmp_path / "policies")
    assert all(g.quotas is not None for g in bundle.grants.values())
    demo_data.generate(tmp_path / "source", scale=0.02)
    for module, key in ((verify_load, "claims"), (score_load, "keys")):
        bodies = module._bodies(tmp_path / "source")  # type: ignore[attr-defined]
        assert len(bodies) > 10
        assert all(json.loads(b)["purpose"] and json.loads(b)[key] for b in bodies[:50])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the load runs need wrk (apt install wrk)")
@pytest.mark.parametrize("script", ["verify_load.py", "score_load.py"])
def test_load_benchmarks_run(script: str) -> None:
    out = _run(script, "--seconds", "1", "--rounds", "1", "--connections", "2", "--scale", "0.02", timeout=180)
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["reference_rps"] > 0 and figures["ratio_1_worker"] > 0 and figures["ratio_2_workers"] > 0
    assert figures["p99_ms"] > 0 and figures["non2xx"] == 0, out
    assert figures["reference_cpu_us_per_request"] > 0 and figures["cpu_us_per_request_2_workers"] > 0, out
    assert figures["budget_us_1_worker"] > 0 and figures["loop_cpu_us_per_request_1_worker"] > 0, out


def test_the_cpu_budget_of_a_target_is_what_the_cores_give_at_its_rate() -> None:
    """One worker has one core; more share the machine's cores with wrk, which is paid first."""
    load = _load_module("load")
    budget = load.budget_us  # type: ignore[attr-defined]
    assert budget(5000.0, 0.5, 1, 30.0) == pytest.approx(400.0)  # one core at 2,500 a second
    cores = min(2, os.cpu_count() or 1)
    assert budget(5000.0, 1.0, 2, 30.0) == pytest.approx(cores * 200.0 - 30.0)
    assert budget(5000.0, 1.0, 2, 60.0) < budget(5000.0, 1.0, 2, 30.0) < budget(5000.0, 0.9, 2, 30.0)
