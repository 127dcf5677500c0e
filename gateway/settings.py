"""Settings: one TOML file plus `VEILGATE_*` environment variables (which win).

Built once at startup and kept on `app.state`; leaves never see this object, only the plain
values they need. Unknown keys are refused, so a typo cannot silently fall back to a default.
Secrets are never set here inline: they live as files under `state_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VEILGATE_", extra="forbid", frozen=True)

    state_dir: Path = Field(Path("state"), description="Keys, client accounts and the data domain live here.")
    data_dir: Path | None = Field(None, description="The data domain; defaults to `<state_dir>/data`.")
    policy_dir: Path = Field(Path("policies"), description="The policy bundle (YAML).")
    issuer: str = Field("veilgate", min_length=1, description="`iss` of access tokens and receipts.")
    audience: str = Field("veilgate-api", min_length=1, description="`aud` that access tokens must carry.")
    token_ttl_seconds: int = Field(900, ge=60, le=3600, description="Lifetime of an access token.")
    clock_leeway_seconds: int = Field(5, ge=0, le=120, description="Clock skew tolerated on `exp`/`nbf`.")
    token_attempts_per_client: int = Field(
        30, ge=1, le=100_000, description="Token requests a minute for one client id, checked before the secret."
    )
    token_attempts_per_address: int = Field(
        300, ge=1, le=100_000, description="Token requests a minute from one source address, checked before the secret."
    )
    token_attempts_overall: int = Field(
        1200,
        ge=1,
        le=1_000_000,
        description="Token requests a minute to one server process, checked before the secret.",
    )
    host: str = Field("127.0.0.1", description="Address `veilgate serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `veilgate serve` binds.")
    engine_threads: int = Field(2, ge=1, le=64, description="DuckDB threads per open dataset version.")
    registration_memory_limit: str = Field(
        "2GB",
        pattern=r"^[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB's memory limit while `veilgate register` builds a version; beyond it, it spills to"
        " `registration_temp_directory`. Peak memory then stays near this figure whatever the row count.",
    )
    registration_temp_directory: Path | None = Field(
        None,
        description="Where registration spills beyond its memory limit (needs up to about twice the source's size"
        " free); defaults to `<data_dir>/domain/.spill`.",
    )
    spark_master: str = Field(
        "local[*]",
        min_length=1,
        description="Spark master for datasets whose catalogue entry says `engine: spark` (local[*], spark://host:7077,"
        " yarn, k8s://...); needs the veilgate[spark] extra and Java 17.",
    )
    spark_warehouse: str | None = Field(
        None,
        description="Where Spark writes dataset versions (a path, hdfs:// or s3a:// URI); defaults to"
        " `<data_dir>/domain`. Every gateway replica and Spark executor must read it.",
    )
    console_origin: str | None = Field(
        None,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+$",
        description="The origin browsers reach the console at (https://host[:port]), when a proxy in front ends"
        " TLS: console forms must come from it and the session cookie is marked Secure when it is https. Unset:"
        " the scheme and host the gateway sees (X-Forwarded-Proto only from FORWARDED_ALLOW_IPS).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    lookup_index_max_rows: int = Field(
        2_000_000, ge=0, description="Datasets up to this size are looked up from memory; larger ones in DuckDB."
    )
    policy_approvals: int = Field(
        2, ge=1, le=2, description="Administrators who must approve a policy change (the proposer counts as one)."
    )
    database_dsn: str | None = Field(
        None,
        description="PostgreSQL DSN of the state that gateway replicas on several machines share: the ledgers"
        " (privacy budget; verification rates, quotas and probing), the audit log, the freezes, the jobs, the"
        " client accounts, the policy and the objections;"
        " unset: SQLite and files under `state_dir`.",
    )
    database_schema: str = Field(
        "veilgate", pattern=r"^[a-z][a-z0-9_]{0,62}$", description="PostgreSQL schema of those tables."
    )
    sandbox_unsafe_run_without_isolation: bool = Field(
        False,
        description="Development only: run approved jobs without the jail where it cannot be built; logged loudly.",
    )
    sandbox_job_uids: tuple[int, int] = Field(
        (200_000, 200_999),
        description="First and last uid `veilgate worker` runs jobs as, one unused uid per running job: limits"
        " such as the number of processes and the summed memory then hold for the whole job. No other"
        " process or file on the machine may use these uids.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: `veilgate serve` logs JSON lines, one event a line, with the request id."
    )
    tracing: bool = Field(
        False, description="OpenTelemetry: one span per request (needs the `tracing` extra); off by default."
    )
    state_recheck_seconds: float = Field(
        0.1,
        ge=0,
        le=5,
        description="How long a server process answers from its copy of the state other processes on this machine"
        " change (freezes, the policy in force, catalogue records, key rings, client accounts) before it looks for"
        " their change; a change made through the process itself is seen at once. 0: on every request.",
    )
    checkpoint_interval_seconds: int = Field(
        60, ge=1, le=86_400, description="How often a server signs a checkpoint of the audit log, if it grew."
    )

    @property
    def data_path(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.state_dir / "data"

    @property
    def token_keys_dir(self) -> Path:
        return self.state_dir / "keys" / "token"

    @property
    def receipt_keys_dir(self) -> Path:
        return self.state_dir / "keys" / "receipt"

    @property
    def audit_dir(self) -> Path:
        return self.state_dir / "audit"

    @property
    def policy_store_dir(self) -> Path:
        return self.state_dir / "policy"

    @property
    def freezes_file(self) -> Path:
        return self.state_dir / "freezes.json"

    @property
    def clients_file(self) -> Path:
        return self.state_dir / "clients.json"


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from `config_file` (TOML), overridden by the environment, then by `overrides`."""
    if config_file is None:
        return Settings(**overrides)  # type: ignore[arg-type]  # validated by pydantic

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file))

    settings = _FromFile(**overrides)  # type: ignore[arg-type]  # validated by pydantic
    base = settings.model_dump()
    if settings.data_dir is None:
        base.pop("data_dir")
    # Relative paths in a config file are relative to the file, not to the working directory.
    for name in ("state_dir", "data_dir", "policy_dir", "registration_temp_directory"):
        value = base.get(name)
        if isinstance(value, Path) and not value.is_absolute() and name not in overrides:
            base[name] = (config_file.parent / value).resolve()
    return Settings.model_construct(**base)
