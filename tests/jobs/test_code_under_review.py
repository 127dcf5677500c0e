"""What reviewers read is what runs: code that reads one way to a person and runs another is
refused at submission, before anyone reviews it. The attacks: an encoding declaration under
which a comment is code (UTF-7: `+AAo-` is a newline), bidirectional overrides that reorder
what a reviewer sees (Trojan Source, CVE-2021-42574), invisible characters, identifiers that
look like others, and archive members that two tools unpack differently (one name twice)."""

from __future__ import annotations

import base64
import importlib.util
import io
import py_compile
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import InvalidRequest
from gateway.services import policy_admin
from gateway.services.jobs import run_local
from tests.jobs.conftest import Jobs, needs_isolation

HIDDEN = 'print("hidden code ran")'
UTF7 = "# -*- coding: utf-7 -*-\n# a harmless comment +AAo-" + HIDDEN + '\nprint("visible")\n'
TROJAN = 'access = "user"\nif access != "user\u202e \u2066# check if admin\u2069 \u2066":\n    print("admin")\n'
HOSTILE = {
    "utf-7": UTF7,
    "bidi": TROJAN,
    "zero width": "limit = 10\nlimit\u200b = 1000\nprint(limit)\n",
    "line separator": '# note\u2028print("hidden")\nprint(1)\n',
    "homoglyph": "is_\u0430dmin = True\nprint(is_\u0430dmin)\n",  # a Cyrillic a
    "control": 'print("a")\x1b[2K\nprint("b")\n',
    "nul": 'print("a")\x00\n',
}
RULE = "code: Python files must be UTF-8 (no other encoding declared), with ASCII identifiers"


def test_utf7_comments_are_code_to_python(tmp_path: Path) -> None:
    """The attack is real: the interpreter the jail runs executes what a reviewer reads as a comment."""
    path = tmp_path / "job.py"
    path.write_text(UTF7)
    ran = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=True)
    assert "hidden code ran" in ran.stdout


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_code_that_reads_otherwise_than_it_runs_is_refused(jobs_gateway: Callable[..., Jobs], name: str) -> None:
    jobs = jobs_gateway()
    refused = jobs.submit(HOSTILE[name])
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith(RULE), detail
    assert "hidden" not in refused.text and "admin" not in refused.text
    # the same inside an archive, in main.py or in a module it imports
    for member in ("main.py", "lib/helpers.py"):
        files = {"main.py": "import lib.helpers\n", "lib/__init__.py": ""} | {member: HOSTILE[name]}
        refused = jobs.submit(None, archive=_zip(list(files.items())))
        assert refused.status_code == 422 and refused.json()["detail"].startswith(RULE.replace("code:", "archive:"))


def test_plain_code_with_text_in_any_language_is_taken(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = '# Unternehmen nach Status: 企业\nlabel = "état: ok"\nprint(label)\n'
    assert jobs.submit(code).status_code == 201
    assert jobs.submit("\ufeff" + code).status_code == 201  # a byte order mark is UTF-8's own


def test_an_archive_naming_one_file_twice_is_refused(jobs_gateway: Callable[..., Jobs]) -> None:
    """`unzip -l` lists both; a reviewer reads the first, Python's zipfile ran the last."""
    jobs = jobs_gateway()
    for second in ("main.py", "./main.py", "lib/../main.py", "lib/\u202eyp.main"):
        refused = jobs.submit(None, archive=_zip([("main.py", 'print("reviewed")\n'), (second, HIDDEN + "\n")]))
        assert refused.status_code == 422, second
        assert refused.json()["detail"].startswith("archive: every member must be a plain relative path, once")


def _zip(members: list[tuple[str, str | bytes]]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of a name written twice: the attack
        for name, text in members:
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


@needs_isolation
def test_a_log_cannot_reorder_or_hide_what_reviewers_and_checkers_read(jobs_gateway: Callable[..., Jobs]) -> None:
    """A job's stdout and stderr reach reviewers and output checkers: a terminal escape, a
    bidirectional override or a carriage return there could hide or reorder lines they read."""
    jobs = jobs_gateway()
    code = (
        "import sys\n"
        'print("rows: 12\\rrows: 99\\u202e21 :swor\\x1b[2K\\u200bend")\n'
        'sys.stderr.write("warn\\x1b]52;c;aGk=\\x07\\u2028done\\n")\n'
    )
    outcome = jobs.run(code, checked=False)
    shown = jobs.admin_view(outcome["id"])
    for text in (shown["stdout"], shown["stderr"]):
        assert not any(ch in text for ch in ("\r", "\x1b", "\x07", "\u202e", "\u200b", "\u2028")), repr(text)
    assert "rows: 12\\u000drows: 99\\u202e21 :swor\\u001b[2K\\u200bend" in shown["stdout"]
    assert "warn\\u001b]52;c;aGk=\\u0007\\u2028done\n" in shown["stderr"]


def test_reviewers_read_an_archive_file_by_file_as_it_runs(jobs_gateway: Callable[..., Jobs]) -> None:
    """An archive was shown to reviewers as base64: nobody can review that. Its files are shown
    one by one, as the gateway unpacks them for the run (the same names, the same bytes)."""
    jobs = jobs_gateway()
    members = [("main.py", "import lib.helpers\nlib.helpers.go()\n"), ("lib/__init__.py", ""),
               ("lib/helpers.py", "def go() -> None:\n    print('hello from the helper')\n"),
               ("notes.bin", b"\xff\xfe binary")]  # fmt: skip
    submitted = jobs.submit(None, archive=_zip(members))
    assert submitted.status_code == 201, submitted.text
    shown = jobs.admin_view(submitted.json()["id"])
    assert shown["files"]["main.py"] == members[0][1]
    assert shown["files"]["lib/helpers.py"] == members[2][1]
    assert shown["files"]["notes.bin"].startswith("(not text: 9 bytes, SHA-256 ")
    assert "files" not in jobs.status(submitted.json()["id"])  # the researcher's view has none
    one_file = jobs.submit('print("one file")\n').json()["id"]
    assert jobs.admin_view(one_file)["files"] == {"main.py": 'print("one file")\n'}


def test_a_local_run_refuses_what_a_submission_would(jobs_gateway: Callable[..., Jobs], tmp_path: Path) -> None:
    """`veilgate jobs run-local` tells the researcher before they submit, with the same rule."""
    jobs = jobs_gateway()
    rt = jobs.client.app.state.runtime  # type: ignore[attr-defined]
    bundle = policy_admin.current(rt).bundle
    entries = [rt.catalog.get("social_insurance").entry]
    with pytest.raises(InvalidRequest, match=r"^code: Python files must be UTF-8"):
        run_local(bundle, "labour-analysis", entries, UTF7, ["n"], epsilon="1", work_dir=tmp_path)


def _pyc(source: str, tmp_path: Path) -> bytes:
    """Bytecode of `source` that Python loads without checking it against any source file
    (PEP 552, unchecked hash)."""
    path = tmp_path / "compiled_from.py"
    path.write_text(source)
    target = tmp_path / "out.pyc"
    py_compile.compile(str(path), cfile=str(target), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return target.read_bytes()


def test_bytecode_beside_a_reviewed_module_runs_instead_of_it(tmp_path: Path) -> None:
    """The attack is real: an unchecked-hash `.pyc` in `__pycache__` is imported in place of the
    `.py` beside it, which is all a reviewer reads."""
    job = tmp_path / "job"
    (job / "__pycache__").mkdir(parents=True)
    (job / "helper.py").write_text("def go() -> None:\n    print('reviewed')\n")
    cached = Path(importlib.util.cache_from_source(str(job / "helper.py")))
    cached.write_bytes(_pyc("def go() -> None:\n    print('hidden code ran')\n", tmp_path))
    ran = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(job)!r}); "
                          "import helper; helper.go()"], capture_output=True, text=True, check=True)  # fmt: skip
    assert ran.stdout == "hidden code ran\n"


def test_an_archive_with_code_no_reviewer_can_read_is_refused(
    jobs_gateway: Callable[..., Jobs], tmp_path: Path
) -> None:
    jobs = jobs_gateway()
    hidden = _pyc("def go() -> None:\n    print('hidden code ran')\n", tmp_path)
    tag = Path(importlib.util.cache_from_source("helper.py")).name
    base: list[tuple[str, str | bytes]] = [("main.py", "import helper\nhelper.go()\n"),
                                           ("helper.py", "def go() -> None:\n    print('reviewed')\n")]  # fmt: skip
    compiled = (f"__pycache__/{tag}", "helper.pyc", "lib/__pycache__/x.pyc", "native.abi3.so", "native.so",
                "native.cpython-311-x86_64-linux-gnu.so", "setup.pth")  # fmt: skip
    for member in compiled:
        refused = jobs.submit(None, archive=_zip([*base, (member, hidden)]))
        assert refused.status_code == 422, member
        assert refused.json()["detail"].startswith("archive: no compiled code"), refused.text
    assert jobs.submit(None, archive=_zip([*base, ("data/lookup.csv", "a,b\n1,2\n")])).status_code == 201
