"""Where a `Gateway` finds its URL and credentials when they are not given in code.

Environment variables first (`VEILGATE_URL`, `VEILGATE_CLIENT_ID`, `VEILGATE_CLIENT_SECRET`,
`VEILGATE_PURPOSE`), then a TOML file: `VEILGATE_CLIENT_CONFIG`, else
`~/.config/veilgate/client.toml`. The file holds `url`, `client_id`, and `secret` or
`secret_file` (a path, so that the secret itself can stay out of the file), and may hold
`purpose`; a `[profiles.NAME]` table overrides them for `profile=NAME`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("~/.config/veilgate/client.toml")


@dataclass(frozen=True)
class ClientConfig:
    url: str
    client_id: str
    secret: str
    purpose: str | None = None


def load_config(path: str | Path | None = None, profile: str | None = None) -> ClientConfig:
    """Settings from the environment, completed by the config file; ValueError names what is missing."""
    values: dict[str, Any] = {}
    file = Path(path or os.environ.get("VEILGATE_CLIENT_CONFIG") or DEFAULT_CONFIG).expanduser()
    if path is not None and not file.is_file():
        raise ValueError(f"no client config file at {file}")
    if file.is_file():
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        values = _with_secret({k: v for k, v in data.items() if k != "profiles"}, file)
        if profile is not None:
            profiles = data.get("profiles", {})
            if profile not in profiles:
                raise ValueError(f"no profile {profile!r} in {file}")
            values |= _with_secret(dict(profiles[profile]), file)  # a profile's secret_file beats the top secret
    env = {"url": "VEILGATE_URL", "client_id": "VEILGATE_CLIENT_ID", "secret": "VEILGATE_CLIENT_SECRET",
           "purpose": "VEILGATE_PURPOSE"}  # fmt: skip
    for name, variable in env.items():
        if os.environ.get(variable):
            values[name] = os.environ[variable]
    missing = [name for name in ("url", "client_id", "secret") if not values.get(name)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}: set {', '.join(env[m] for m in missing)} or write {file}")
    return ClientConfig(str(values["url"]), str(values["client_id"]), str(values["secret"]), values.get("purpose"))


def _with_secret(values: dict[str, Any], file: Path) -> dict[str, Any]:
    """One table of the file, its `secret_file` (relative to the file) read into `secret`."""
    if "secret_file" in values:
        secret_path = Path(values.pop("secret_file")).expanduser()
        if not secret_path.is_absolute():
            secret_path = file.parent / secret_path
        values.setdefault("secret", secret_path.read_text(encoding="utf-8").strip())
    return values
