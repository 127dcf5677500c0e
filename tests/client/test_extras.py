"""pandas, polars and matplotlib are optional: without them the client still imports and releases,
and a call that needs one says which extra to install; the README's "From Python" calls exist."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from veilgate_client import Gateway, Receipt, Release
from veilgate_client.results import Budget

from tests.conftest import REPO

RESULT = {"template": "t", "measure": "count", "epsilon": "1", "parameters": {"group_by": ["region"]},
          "rows": [{"group": {"region": "north"}, "value": 3.0, "interval": [1.0, 5.0]}]}  # fmt: skip


def _release() -> Release:
    return Release(RESULT, Receipt("x.y.z", {"result": RESULT}))


@pytest.mark.parametrize(
    ("missing", "call", "extra"),
    [
        ("pandas", lambda: _release().to_pandas(), "veilgate-client[pandas]"),
        ("polars", lambda: _release().to_polars(), "veilgate-client[polars]"),
        ("matplotlib.pyplot", lambda: _release().plot(), "veilgate-client[plot]"),
        ("matplotlib.pyplot", lambda: Budget({"budgets": []}).plot(), "veilgate-client[plot]"),
    ],
)
def test_a_call_that_needs_a_missing_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, missing: str, call: Any, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    with pytest.raises(ImportError, match=re.escape(extra)):
        call()
    assert _release().rows() == [{"region": "north", "value": 3.0, "lower": 1.0, "upper": 5.0}]


def test_the_client_imports_without_the_extras() -> None:
    blocked = "import sys; sys.modules.update(dict.fromkeys(['pandas', 'polars', 'matplotlib', 'pyarrow']))"
    made = "veilgate_client.Gateway('http://localhost', 'a', 'b', pin_file=False).close()"
    check = f"{blocked}; import veilgate_client; {made}"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_the_readme_calls_exist() -> None:
    readme = (REPO / "README.md").read_text()
    snippet = readme.split("## From Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    called = set(re.findall(r"\.(\w+)\(", snippet))
    assert {"release", "to_pandas", "plot", "prove_inclusion"} <= called
    owners = (Gateway, Release, Receipt)
    assert [name for name in called if not any(hasattr(owner, name) for owner in owners)] == []
