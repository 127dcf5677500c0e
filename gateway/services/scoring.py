"""Scoring one entity in the domain with an approved model (`POST /v1/models/{model}/score`).

1. authorize: a grant of this consumer covers the model and the purpose, now; nothing it
   reads is frozen;
2. validate every key (format and check character); an invalid key gets an error naming its
   index, and the valid ones are still scored;
3. compute the features in the domain and score them; only the score and/or grade leave;
4. admit in the ledger like verification: rates, the grant's quota, distinct entities, how
   often one entity is scored; the same entity and model version again gets its stored answer;
5. audit (keys as pseudonyms), sign, respond.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.domain.canonical_json import LARGEST_EXACT_INT, canonical_text
from gateway.domain.identifiers import KEY_FORMATS, normalize_key
from gateway.domain.models import (
    Feature,
    OnnxModel,
    Scorer,
    ScoringModel,
    feature_value,
    onnx_row,
    onnx_score,
    score,
)
from gateway.domain.policy import authorize, check_not_frozen
from gateway.domain.principal import Principal
from gateway.domain.trail import AuditEvent, Cost, Json
from gateway.errors import InternalError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.services import policy_admin
from gateway.services.claims import ENTITY_KINDS, AuditNote, fee_per_claim
from gateway.services.model_catalogue import model_version
from gateway.services.needs import HasDomain, HasFreezes
from gateway.services.policy_admin import PolicyReader
from gateway.services.release import PendingRelease, ReleaseNeeds, prepare_release
from gateway.state.ports import Admission, ClaimUse, VerificationRequest


class ScoringNeeds(PolicyReader, ReleaseNeeds, HasDomain, HasFreezes, Protocol):
    """What scoring takes."""


__all__ = ["ScoreCall", "ScoringPrepared", "pending_scoring", "prepare_scoring", "scores_in_memory", "warm_up"]


@dataclass(frozen=True, slots=True)
class ScoreCall:
    model: str
    purpose: str
    keys: list[str]
    body: Json


@dataclass(frozen=True, slots=True)
class ScoringPrepared:
    event: AuditEvent
    call: ScoreCall
    now: float
    grant_id: str
    model: Scorer
    policy_version: str
    valid: tuple[int, ...]
    invalid: dict[int, Json]
    admission: VerificationRequest
    subjects: tuple[str, ...]


def prepare_scoring(
    rt: ScoringNeeds, principal: Principal, event: AuditEvent, call: ScoreCall, note: AuditNote
) -> ScoringPrepared:
    """Steps 1 to 3: nothing is counted or released yet."""
    now = time.time()
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    model = bundle.models.get(call.model)
    if not isinstance(model, Scorer):
        raise NotFound("model: no scoring model of this name")
    note.service = call.model
    grant_id, grant = authorize(bundle, principal, call.model, call.purpose, datetime.fromtimestamp(now, UTC))
    if call.model in policy.unavailable:
        raise ServiceUnavailable(f"model: unavailable: {policy.unavailable[call.model]}")
    organisation = bundle.organisation_of(principal)
    datasets = sorted({f.dataset for f in model.features.values()})
    freezes = rt.freezes.active()
    for dataset in datasets:
        check_not_frozen(
            freezes, consumer=principal.client_id, organisation=organisation, service=call.model, dataset=dataset
        )
    if len(call.keys) > model.max_batch:
        raise InvalidRequest(f"keys: at most {model.max_batch} entities per request for this model")
    versions: dict[str, str] = {}
    for dataset in datasets:
        record = rt.catalog.get(dataset)
        if not record.is_served:
            raise ServiceUnavailable(f"model: unavailable: its dataset {dataset} is not served")
        versions[dataset] = record.version
    today = datetime.fromtimestamp(now, UTC).date()
    invalid: dict[int, Json] = {}
    uses: list[ClaimUse] = []
    valid: list[int] = []
    is_valid = KEY_FORMATS[model.key_format]
    for index, raw in enumerate(call.keys):
        key = normalize_key(raw)
        if not is_valid(key):
            invalid[index] = {
                "entity": index,
                "result": "invalid",
                "error": {"field": "key", "message": f"not a valid {model.key_format} (check character or length)"},
            }
            continue
        # SECURITY: the subject is noted before the data is read, so that a lookup that fails
        # (on whatever the entity's rows hold) still names whom the request asked about.
        subject = rt.audit.pseudonym(ENTITY_KINDS[model.key_format], key)
        note.subjects.append(subject)
        answer, known = _score_one(rt, model, versions, key, today)
        question = canonical_text([call.model, model_version(model), subject])
        uses.append(
            ClaimUse(
                rt.audit.pseudonym("claim", question),
                subject,
                (rt.audit.pseudonym("ask", question),),
                canonical_text(answer),
                known,
            )
        )
        valid.append(index)
    request = VerificationRequest(
        fee_micro_yuan_per_claim=fee_per_claim(bundle, model.price_class or grant.price_class, call.purpose),
        consumer=principal.client_id,
        organisation=organisation,
        grant=grant_id,
        service=call.model,
        purpose=call.purpose,
        limits=model.limits,
        daily_quota=grant.quotas.daily_claims,
        claims=uses,
    )
    return ScoringPrepared(
        event, call, now, grant_id, model, policy.version, tuple(valid), invalid, request, tuple(note.subjects)
    )


NOT_SCORED: Json = {"result": "not_scored"}
"""The answer for a known entity the model cannot score (see `_score_one`)."""


def _feature_columns(feature: Feature) -> list[str]:
    return [feature.column, *([feature.order_by] if feature.order_by else [])]


def warm_up(rt: ScoringNeeds) -> int:
    """Build the lookup index of every feature of every scoring model now, not on its first key.
    Returns how many models were warmed (those whose datasets are all served)."""
    warmed = 0
    for model in policy_admin.current(rt).bundle.models.values():
        if not isinstance(model, Scorer):
            continue
        records = {f.dataset: rt.catalog.find(f.dataset) for f in model.features.values()}
        versions = {name: r.version for name, r in records.items() if r is not None and r.is_served and r.version}
        if len(versions) < len(records):
            continue
        for feature in model.features.values():
            rt.domain.find(feature.dataset, versions[feature.dataset], feature.key, "", _feature_columns(feature))
        warmed += 1
    return warmed


def scores_in_memory(rt: ScoringNeeds, model_name: str) -> bool:
    """Whether `prepare_scoring` reads only memory (every feature's index is held) and runs no
    ONNX model, so that it may run on the event loop; if not, it runs in a thread."""
    model = policy_admin.current(rt).bundle.models.get(model_name)
    if not isinstance(model, Scorer):
        return True  # refused before any data is read
    if isinstance(model, OnnxModel):  # a network run once a key: CPU the loop must not wait on
        return False
    for feature in model.features.values():
        record = rt.catalog.find(feature.dataset)
        if record is None or record.version is None:
            return True
        if not rt.domain.in_memory(feature.dataset, record.version, feature.key, _feature_columns(feature)):
            return False
    return True


def _score_one(rt: ScoringNeeds, model: Scorer, versions: dict[str, str], key: str, today: Any) -> tuple[Json, bool]:
    """The answer for one valid key (score and/or grade, or not_found), and whether it is known."""
    found: dict[str, list[tuple[Any, Any]]] = {}
    known = False
    for name, feature in model.features.items():
        wanted = _feature_columns(feature)
        rows = rt.domain.find(feature.dataset, versions[feature.dataset], feature.key, key, wanted)
        if feature.dataset == model.entity_dataset and rows:
            known = True
        found[name] = [(r[0], r[1] if len(r) > 1 else None) for r in rows]
    if not known:
        return {"result": "not_found"}, False
    if not isinstance(model, (ScoringModel, OnnxModel)):  # the bundle's schema allows no third kind
        raise InternalError("a scoring model of no kind this gateway runs")
    # SECURITY: a model that cannot score this entity (NaN or a failed run from its values, a
    # score past JSON's exact integers, a bin that cannot compare its value) gets one fixed
    # answer, counted and billed like a score; raised, it told that bit free and uncounted.
    try:
        values = {name: feature_value(model.features[name], rows, today) for name, rows in found.items()}
        if isinstance(model, ScoringModel):
            points, grade = score(model, values)
        else:
            (output,) = rt.onnx.run(
                model.file,
                model.sha256,
                input_name=model.input_name,
                output_name=model.output_name,
                rows=[onnx_row(model, values)],
            )
            if output is None:
                return NOT_SCORED, True
            points, grade = onnx_score(model, output)
    except (ArithmeticError, ValueError, TypeError):  # decimal.InvalidOperation is an ArithmeticError
        return NOT_SCORED, True
    if abs(points) > LARGEST_EXACT_INT:  # JSON carries no larger score exactly
        return NOT_SCORED, True
    answer: Json = {"result": "scored"}
    if model.output in ("score", "both"):
        answer["score"] = points
    if model.output in ("grade", "both"):
        answer["grade"] = grade
    return answer, True


def pending_scoring(rt: ScoringNeeds, prepared: ScoringPrepared, admission: Admission) -> PendingRelease:
    answers: dict[int, Json] = dict(prepared.invalid)
    for index, stored in zip(prepared.valid, admission.answers, strict=True):
        answers[index] = {
            "entity": index,
            **orjson.loads(stored),
            "transaction_id": f"{prepared.event.request_id}-{index}",
        }
    call = prepared.call
    return prepare_release(
        rt,
        prepared.event,
        service=call.model,
        request=call.body,
        result={
            "purpose": call.purpose,
            "grant": prepared.grant_id,
            "model": call.model,
            "model_version": model_version(prepared.model),
            "answers": [answers[i] for i in sorted(answers)],
        },
        dataset=prepared.model.entity_dataset,
        policy_version=prepared.policy_version,
        cost=Cost(quota_units=len(prepared.valid) - admission.repeats),
        subjects=prepared.subjects,
        grant=prepared.grant_id,
    )
