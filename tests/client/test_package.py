"""`pip install ./client` works on its own: the wheel builds offline, holds the package and its
typing marker, asks only for its declared dependencies, and the client never imports the gateway."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

CLIENT = REPO / "client"


def test_the_wheel_builds_offline_with_its_own_dependencies(tmp_path: Path) -> None:
    source = shutil.copytree(CLIENT, tmp_path / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("veilgate_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert {"veilgate_client/__init__.py", "veilgate_client/receipt.py", "veilgate_client/py.typed"} <= names
    assert not any(n.startswith(("gateway/", "tests/")) for n in names)
    required = {line.split(":", 1)[1].split(";")[0].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}  # fmt: skip
    assert {r.split(">")[0].split("<")[0] for r in required} == {"httpx", "cryptography", "rfc8785"}
    assert "Provides-Extra: pandas" in metadata and "Provides-Extra: plot" in metadata


def test_the_client_never_imports_the_gateway() -> None:
    for source in (CLIENT / "veilgate_client").glob("*.py"):
        tree = ast.parse(source.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name == "gateway" or name.startswith("gateway.") for name in imported), source
    check = "import sys, veilgate_client; assert not [m for m in sys.modules if m.split('.')[0] == 'gateway']"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_modules_stay_small() -> None:
    for source in (CLIENT / "veilgate_client").glob("*.py"):
        assert len(source.read_text().splitlines()) <= 400, source


def test_docs_name_every_public_call_and_exception() -> None:
    import veilgate_client
    from veilgate_client import jobs, receipt, results

    docs = (REPO / "docs" / "client.md").read_text()
    classes = [veilgate_client.Gateway, receipt.Receipt, receipt.Inclusion, results.Release, results.Batch,
               results.Preview, results.Budget, results.Fit, results.Answers, results.RateLimitState, jobs.Job,
               jobs.LocalRun]  # fmt: skip
    public = {(cls.__name__, name) for cls in classes for name in [*vars(cls), *getattr(cls, "__annotations__", {})]}
    missing = sorted(f"{owner}.{name}" for owner, name in public
                     if not name.startswith("_") and f".{name}" not in docs and f"`{name}" not in docs)  # fmt: skip
    missing += [name for name in veilgate_client.__all__ if f"`{name}`" not in docs]
    assert missing == []
