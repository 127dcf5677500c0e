"""Where a `Gateway` finds its URL and credentials: arguments, the environment, a config file (with
a secret file beside it and profiles); the environment wins over the file; what is missing is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from veilgate_client import Gateway

from tests.client.conftest import Served

VARIABLES = ["VEILGATE_URL", "VEILGATE_CLIENT_ID", "VEILGATE_CLIENT_SECRET", "VEILGATE_PURPOSE",
             "VEILGATE_CLIENT_CONFIG"]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/veilgate/client.toml of the machine's
    return monkeypatch


def test_from_the_environment_alone(served: Served, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("VEILGATE_URL", served.base)
    clean_env.setenv("VEILGATE_CLIENT_ID", "demo-researcher")
    clean_env.setenv("VEILGATE_CLIENT_SECRET", served.credentials["demo-researcher"])
    clean_env.setenv("VEILGATE_PURPOSE", "public_research")
    with Gateway.from_env(pin_file=tmp_path / "pin.json") as gw:
        assert gw.me()["client_id"] == "demo-researcher" and gw.purpose == "public_research"
        assert gw.release("insured-persons", epsilon="0.1").receipt.document["consumer"] == "demo-researcher"


def test_from_a_config_file_with_a_secret_file_and_profiles(
    served: Served, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "business.secret").write_text(served.credentials["demo-business"] + "\n")
    config = tmp_path / "client.toml"
    config.write_text(
        f'url = "{served.base}"\nclient_id = "demo-researcher"\n'
        f'secret = "{served.credentials["demo-researcher"]}"\npurpose = "public_research"\n'
        '[profiles.bank]\nclient_id = "demo-business"\nsecret_file = "business.secret"\npurpose = "credit_assessment"\n'
    )
    with Gateway.from_env(config, pin_file=False) as gw:
        assert gw.me()["client_id"] == "demo-researcher"
    clean_env.setenv("VEILGATE_CLIENT_CONFIG", str(config))  # found through the variable, one profile chosen
    with Gateway.from_env(profile="bank", pin_file=False) as bank:
        assert bank.me()["client_id"] == "demo-business" and bank.purpose == "credit_assessment"
    clean_env.setenv("VEILGATE_PURPOSE", "statistics")  # the environment wins over the file
    assert Gateway.from_env(profile="bank", pin_file=False).purpose == "statistics"
    home_config = tmp_path / "home" / ".config" / "veilgate" / "client.toml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text(f'url = "{served.base}"\nclient_id = "x"\nsecret = "y"\n')
    clean_env.delenv("VEILGATE_CLIENT_CONFIG")
    assert Gateway.from_env(pin_file=False).client_id == "x"  # the default file
    with pytest.raises(ValueError, match="no profile 'nope'"):
        Gateway.from_env(config, profile="nope")


def test_what_is_missing_is_named(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("VEILGATE_URL", "http://127.0.0.1:1")
    with pytest.raises(ValueError, match="missing client_id, secret: set VEILGATE_CLIENT_ID, VEILGATE_CLIENT_SECRET"):
        Gateway.from_env()
    with pytest.raises(ValueError, match="no client config file"):
        Gateway.from_env(tmp_path / "absent.toml")


def test_a_secret_never_travels_in_clear_text_off_this_machine() -> None:
    with pytest.raises(ValueError, match="https://"):
        Gateway("http://gateway.example.org", "a", "b", pin_file=False)
    with pytest.raises(ValueError, match="https://"):
        Gateway("ftp://gateway.example.org", "a", "b", pin_file=False)
    for url in ("https://gateway.example.org", "http://127.0.0.1:8000", "http://localhost:8000"):
        Gateway(url, "a", "b", pin_file=False).close()
    Gateway("http://gateway.internal", "a", "b", pin_file=False, allow_http=True).close()
