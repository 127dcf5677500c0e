"""The command line finds its installation: --config, VEILGATE_CONFIG, ./veilgate.toml, then the
demo's .demo/veilgate.toml (said in one line); with none, it says so and never suggests keys."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from tests.conftest import REPO, Installation


def _config(path: Path, installation: Installation) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'state_dir = "{installation.settings.state_dir}"\npolicy_dir = "{REPO / "policies"}"\n')
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VEILGATE_CONFIG", raising=False)
    return tmp_path


def test_the_demo_configuration_is_found_and_named(elsewhere: Path, session_installation: Installation) -> None:
    demo = _config(elsewhere / ".demo" / "veilgate.toml", session_installation)
    result = CliRunner().invoke(cli, ["clients", "list"])
    assert result.exit_code == 0 and "demo-researcher" in result.stdout
    assert f"using the demo's configuration {demo}" in result.stderr.replace("\n", "")


def test_the_order_is_option_environment_working_directory_demo(
    elsewhere: Path, session_installation: Installation
) -> None:
    _config(elsewhere / ".demo" / "veilgate.toml", session_installation)
    (elsewhere / "veilgate.toml").write_text(f'state_dir = "{elsewhere / "empty"}"\n')
    (elsewhere / "empty").mkdir()
    local = CliRunner().invoke(cli, ["clients", "list"])  # ./veilgate.toml, whose state has no clients
    assert local.exit_code == 0 and "demo-researcher" not in local.stdout and "demo's" not in local.stderr
    chosen = _config(elsewhere / "chosen.toml", session_installation)
    by_env = CliRunner().invoke(cli, ["clients", "list"], env={"VEILGATE_CONFIG": str(chosen)})
    assert by_env.exit_code == 0 and "demo-researcher" in by_env.stdout
    missing = CliRunner().invoke(cli, ["clients", "list", "--config", str(elsewhere / "nope.toml")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


COMMANDS = [["audit", "verify"], ["doctor"], ["audit", "checkpoint"], ["token", "--client", "x"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_configuration_is_said_plainly_and_no_keys_are_suggested(elsewhere: Path, command: list[str]) -> None:
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1
    assert "no configuration found" in result.stderr and "keys init" not in result.output
    assert not (elsewhere / "state").exists()  # nothing was created


def test_keys_init_still_creates_an_installation_where_there_is_none(elsewhere: Path) -> None:
    result = CliRunner().invoke(cli, ["keys", "init"])
    assert result.exit_code == 0 and (elsewhere / "state" / "keys").is_dir()


@pytest.mark.parametrize("command", [["audit", "verify"], ["doctor"], ["policy", "check", str(REPO / "policies")]])
def test_after_make_demo_the_readme_commands_act_on_the_demo(
    elsewhere: Path, session_installation: Installation, command: list[str]
) -> None:
    shutil.copytree(session_installation.root, elsewhere / ".demo")  # what `make demo` leaves in the checkout
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert f"using the demo's configuration {elsewhere / '.demo' / 'veilgate.toml'}" in result.stderr.replace("\n", "")
    assert result.stderr.count("using the demo's configuration") == 1
    assert not (elsewhere / "state").exists()


def test_make_demo_prints_the_export_line() -> None:
    planned = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"export VEILGATE_CONFIG={REPO}/.demo/veilgate.toml" in planned
