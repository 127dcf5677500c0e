"""Wire models: what the API sends, kept apart from domain types."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, model_validator

from gateway.domain.names import (
    CLIENT_ID_PATTERN,
    IDENTIFIER_PATTERN,
    MAX_POSITION,
    NAME_PATTERN,
    RECORD_ID_PATTERN,
    ClientId,
    Identifier,
    Name,
)
from gateway.domain.policy import Freeze, FreezeKind
from gateway.domain.principal import Role
from gateway.domain.trail import AuditLeaf, ResultDocument

# Path parameters: every name that reaches a file, SQL or a store is checked here, at the edge.
NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="A service, template, model or grant name.")]
DatasetPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="A dataset name.")]
RecordIdPath = Annotated[str, Path(pattern=RECORD_ID_PATTERN, description="An id the gateway handed out.")]
ClientIdPath = Annotated[str, Path(pattern=CLIENT_ID_PATTERN, description="A client id.")]
PositionPath = Annotated[int, Path(ge=0, le=MAX_POSITION, description="A position in the audit log.")]

Number = (
    Annotated[StrictStr, Field(min_length=1, max_length=40, pattern=r"^[+-]?[0-9]*\.?[0-9]+([eE][+-]?[0-9]{1,3})?$")]
    | Annotated[StrictInt, Field(ge=-MAX_POSITION, le=MAX_POSITION)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
)
"""A number from a request: strict (`true` is not 1), finite and of bounded size, or its text."""

CheckInteger = Annotated[StrictInt, Field(ge=-MAX_POSITION, le=MAX_POSITION)]

Bound = (
    Annotated[StrictStr, Field(min_length=1, max_length=40)]
    | Annotated[StrictInt, Field(ge=-MAX_POSITION, le=MAX_POSITION)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
)
"""An end of a range: a number or a date (text), strict and bounded as `Number`."""


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenResponse(_Response):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class HealthResponse(_Response):
    status: str


class ReadinessResponse(_Response):
    status: str
    datasets_served: int
    token_keys: int


class MeResponse(_Response):
    client_id: str
    organisation: str
    roles: list[str]


class ClassificationResponse(_Response):
    domain: str
    category: str


class CatalogSummaryResponse(_Response):
    dataset: str
    registration_code: str
    title: str
    owner_body: str
    classification: ClassificationResponse
    level: str
    status: str
    version: str


class CatalogListResponse(_Response):
    datasets: list[CatalogSummaryResponse]


class PrivacyUnitResponse(_Response):
    column: str
    max_rows: int


class ColumnResponse(_Response):
    name: str
    type: str
    sensitivity: str
    description: str
    nullable: bool
    bounds: tuple[float, float] | None
    categories: list[str] | None
    key_format: str | None


class HistoryEventResponse(_Response):
    kind: str
    at: datetime
    version: str | None
    note: str


class CatalogDetailResponse(CatalogSummaryResponse):
    description: str
    source_system: str
    approximate_rows: str
    privacy_unit: PrivacyUnitResponse
    lookup_keys: list[str]
    columns: list[ColumnResponse]
    history: list[HistoryEventResponse]


class SampleResponse(_Response):
    dataset: str
    synthetic: bool = True
    note: str = "Mock rows generated from the public catalogue entry alone; no value comes from the data."
    rows: list[dict[str, str | int | float | bool | None]]


class DatasetAdminResponse(_Response):
    dataset: str
    status: str
    version: str
    rows: int
    rows_dropped_by_contribution_bound: int
    history: list[HistoryEventResponse]


class DatasetAdminListResponse(_Response):
    datasets: list[DatasetAdminResponse]


class ConsumerCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: ClientId
    organisation: str = Field(min_length=1, max_length=200)
    roles: list[Role] = Field(min_length=1, max_length=4)
    person: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Who holds the account: all of one person's accounts name them alike, and two "
        "approvals must come from two people. Without it, the account is the identity of the administrator "
        "who makes it. A name that differs from an existing person's only in case, width, spacing or "
        "letters that look alike is refused.",
    )  # fmt: skip


class JwkResponse(_Response):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str
    status: str
    retired_at: str | None = None
    revoked_since: str | None = None


class JwksResponse(_Response):
    keys: list[JwkResponse]


class CheckpointResponse(_Response):
    size: int
    root: str = Field(description="Merkle tree hash (hex) of the first `size` leaves.")
    time: str
    jws: str = Field(description="The signed tree head: keep it to witness the log.")


class CheckpointListResponse(_Response):
    tree_size: int = Field(description="Leaves in the log now; the newest may not be checkpointed yet.")
    checkpoints: list[CheckpointResponse]


class InclusionProofResponse(_Response):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root: str
    audit_path: list[str]


class ConsistencyProofResponse(_Response):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class AuditPageResponse(_Response):
    leaves: list[AuditLeaf]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last.")


class ReleasedResponse(ResultDocument):
    """A signed result: the result document, and `receipt`, a JWS over exactly that document."""

    receipt: str


class FreezeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FreezeKind
    name: str = Field(min_length=1, max_length=64, description="Client id, organisation, dataset or service name.")
    reason: str = Field(
        min_length=1, max_length=500, description="Recorded with the freeze and shown to those refused."
    )

    @model_validator(mode="after")
    def _named(self) -> FreezeRequest:
        pattern = CLIENT_ID_PATTERN if self.kind is FreezeKind.CONSUMER else NAME_PATTERN
        if re.fullmatch(pattern, self.name) is None:
            raise ValueError(f"name: a {self.kind.value} name matches {pattern}")
        return self


class FreezeListResponse(_Response):
    active: list[Freeze]
    history: list[dict[str, Any]]


class RangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Bound | None = Field(None, alias="from", description="Inclusive lower end.")
    to: Bound | None = Field(None, description="Inclusive upper end.")


class AggregateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filters: dict[
        Identifier, Annotated[list[Annotated[str, Field(max_length=200)] | bool], Field(max_length=200)] | RangeRequest
    ] = Field(default_factory=dict, description="Column to a list of allowed values, or to a range {from, to}.")
    group_by: list[Identifier] = Field(default_factory=list, max_length=2)


class AggregateQueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: AggregateParameters = Field(default_factory=AggregateParameters)
    epsilon: Number | None = Field(
        None, description="Epsilon to spend, up to the template's maximum; the template's default if omitted."
    )
    max_interval_width: Number | None = Field(
        None, description="Refuse without charge if the expected 95% interval would be wider than this."
    )


class AggregateRequest(AggregateQueryRequest):
    purpose: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="One of the purposes your grant allows.")


class BatchQueryRequest(AggregateQueryRequest):
    template: Name


class AggregateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    queries: list[BatchQueryRequest] = Field(min_length=1, max_length=20)


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="One of the purposes your grant allows.")
    epsilon: Number | None = Field(None, description="Epsilon to spend; the model's default if omitted.")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: Name = Field(description="The job service your grant names.")
    purpose: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    code: str | None = Field(None, min_length=1, max_length=262_144, description="Python source of the job (one file).")
    archive: str | None = Field(
        None,
        max_length=1_500_000,
        description="Or: a zip archive in base64, with `main.py` at its top (at most 1 MiB).",
    )
    datasets: list[Identifier] = Field(min_length=1, max_length=8)
    outputs: list[Name] = Field(
        [], max_length=20, description="Names of the outputs the job will produce (SDC services: from `tables`)."
    )
    epsilon: Number | None = Field(None, description="For DP job services: the epsilon of all outputs.")
    tables: list[dict[str, Any]] | None = Field(
        None,
        max_length=20,
        description="For SDC job services, every output table: {name, keys, counts} and, for counts the gateway "
        "computes itself, crosstab {dataset, count: rows|units, filters: [{column, values}]}.",
    )


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
