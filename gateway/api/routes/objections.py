"""Objections: consumers file and follow their own; administrators answer them; auditors read."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.api.deps import principal, require_role, runtime
from gateway.api.schemas import RecordIdPath
from gateway.domain.names import IDENTIFIER_PATTERN, RECORD_ID_PATTERN, is_identifier
from gateway.domain.principal import Principal, Role
from gateway.errors import NotFound
from gateway.services.runtime import Runtime
from gateway.state.ports import Status

router = APIRouter(tags=["objections"])
RuntimeDep = Annotated[Runtime, Depends(runtime)]


class ObjectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    about: Literal["dataset", "receipt"]
    subject: str = Field(min_length=1, max_length=128, description="The dataset name, or the receipt's request id.")
    text: str = Field(min_length=1, max_length=4000, description="What is wrong, as you see it.")

    @model_validator(mode="after")
    def _subject(self) -> ObjectionRequest:
        """A dataset name or a request id, never a path: the subject names a file for datasets."""
        if self.about == "dataset" and not is_identifier(self.subject):
            raise ValueError(f"subject: a dataset name matches {IDENTIFIER_PATTERN}")
        if self.about == "receipt" and not re.fullmatch(RECORD_ID_PATTERN, self.subject):
            raise ValueError(f"subject: a request id matches {RECORD_ID_PATTERN}")
        return self


class ObjectionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    reply: str = Field(min_length=1, max_length=4000)


def _readable(who: Principal, objection: dict[str, Any]) -> bool:
    return who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR) or objection["consumer"] == who.client_id


@router.post("/v1/objections", status_code=201)
def file_objection(
    rt: RuntimeDep, who: Annotated[Principal, Depends(principal)], body: ObjectionRequest
) -> dict[str, Any]:
    """Dispute a dataset's quality or a receipt; follow it at GET /v1/objections/{id}."""
    if body.about == "dataset":
        rt.catalog.get(body.subject)  # a registered dataset, or 404
    return rt.objections.file(consumer=who.client_id, about=body.about, subject=body.subject, text=body.text)


@router.get("/v1/objections")
def list_objections(rt: RuntimeDep, who: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Your objections; administrators and auditors see all."""
    everyone = who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR)
    return {"objections": rt.objections.list(None if everyone else who.client_id)}


@router.get("/v1/objections/{objection_id}")
def read_objection(
    rt: RuntimeDep, who: Annotated[Principal, Depends(principal)], objection_id: RecordIdPath
) -> dict[str, Any]:
    found = rt.objections.get(objection_id)
    if not _readable(who, found):
        raise NotFound("objection: no objection of yours has this id")  # another consumer's does not exist for you
    return found


@router.post("/v1/admin/objections/{objection_id}")
def answer_objection(
    rt: RuntimeDep,
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
    objection_id: RecordIdPath,
    body: ObjectionAnswer,
) -> dict[str, Any]:
    """Move an objection: open -> accepted or rejected; accepted -> corrected or rejected."""
    return rt.objections.move(objection_id, body.status, reply=body.reply, by=who.client_id)
