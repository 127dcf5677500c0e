"""Settings: TOML file, environment wins, unknown keys refused, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import load_settings


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "veilgate.toml"
    config.write_text('state_dir = "st"\nport = 9000\ntoken_ttl_seconds = 600\n')
    settings = load_settings(config)
    assert settings.port == 9000 and settings.token_ttl_seconds == 600
    assert settings.state_dir == (tmp_path / "st").resolve()
    assert settings.data_path == settings.state_dir / "data"
    monkeypatch.setenv("VEILGATE_PORT", "9100")
    assert load_settings(config).port == 9100


def test_unknown_key_and_bad_values_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "veilgate.toml"
    config.write_text("prot = 9000\n")
    with pytest.raises(ValidationError, match="prot"):
        load_settings(config)
    config.write_text("token_ttl_seconds = 86400\n")
    with pytest.raises(ValidationError, match="token_ttl_seconds"):
        load_settings(config)
