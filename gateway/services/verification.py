"""Verification (核验): per claim and per field, match or no match about one entity.

1. authorize: a grant of this consumer covers the service and the stated purpose, now;
2. validate and normalise each claim; an invalid claim gets an error naming its index and
   field, and the valid claims of the batch are still answered;
3. look the keys up (exact match only) and compute each answer in the domain;
4. admit in the ledger: rates, the grant's quota, distinct keys, probing; a repeated claim
   gets its stored answer and is not counted; a tripped limit refuses the whole request;
5. release: audit (keys as pseudonyms), sign, respond.

SECURITY: an answer holds booleans and a result word, never a record value. Match, non-match
and (by default) unknown key have one shape. No error depends on the record: every check that
can fail on input (formats, fields, thresholds) runs before the lookup.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.domain.canonical_json import canonical_text
from gateway.domain.catalog import CatalogEntry
from gateway.domain.identifiers import KEY_FORMATS, normalize_key
from gateway.domain.policy import (
    CheckKind,
    FieldCheck,
    UnknownKey,
    VerificationService,
    authorize,
    check_not_frozen,
)
from gateway.domain.principal import Principal
from gateway.domain.trail import AuditEvent, Cost, Json
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.services import policy_admin
from gateway.services.claims import ENTITY_KINDS, AuditNote, fee_per_claim
from gateway.services.needs import HasDomain, HasFreezes, HasLedger
from gateway.services.policy_admin import PolicyReader
from gateway.services.release import PendingRelease, Release, ReleaseNeeds, prepare_release, release
from gateway.state.ports import Admission, ClaimUse, VerificationRequest


class VerificationNeeds(PolicyReader, ReleaseNeeds, HasDomain, HasFreezes, HasLedger, Protocol):
    """What a verification takes."""


@dataclass(frozen=True, slots=True)
class Claim:
    keys: Mapping[str, str]
    checks: Mapping[str, Any]
    consent_ref: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyCall:
    service: str
    purpose: str
    claims: list[Claim]
    body: Json
    """The request as sent, whose digest the receipt carries."""


@dataclass(frozen=True, slots=True)
class Verified:
    released: Release
    admission: Admission


class _Invalid(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class _Valid:
    index: int
    keys: dict[str, str]
    checks: dict[str, Any]
    kind: str


def normalize_text(value: str) -> str:
    """Full-width to half-width (NFKC), no surrounding spaces, inner spaces collapsed, case folded."""
    return " ".join(unicodedata.normalize("NFKC", value).split()).casefold()


def _validate(service: VerificationService, entry: CatalogEntry, claim: Claim, index: int) -> _Valid:
    if set(claim.keys) != set(service.keys):  # unknown names were refused by `refuse_unknown_fields`
        missing = sorted(set(service.keys) - set(claim.keys))
        raise _Invalid(f"keys.{missing[0]}" if missing else "keys", f"give exactly the keys {', '.join(service.keys)}")
    keys: dict[str, str] = {}
    kind = "entity"
    for key_name in service.keys:
        value = normalize_key(claim.keys[key_name])
        key_format = entry.column(key_name).key_format
        if key_format is not None:
            if not KEY_FORMATS[key_format](value):
                raise _Invalid(f"keys.{key_name}", f"not a valid {key_format} (check character or length)")
            kind = ENTITY_KINDS[key_format]
        elif not 0 < len(value) <= 64:
            raise _Invalid(f"keys.{key_name}", "give the full key (1 to 64 characters)")
        keys[key_name] = value
    if not claim.checks:
        raise _Invalid("checks", "ask at least one field")
    checks: dict[str, Any] = {}
    for name, value in claim.checks.items():
        checks[name] = _check_value(service.fields[name], name, value)
    if service.consent_required and not (claim.consent_ref or "").strip():
        raise _Invalid("consent_ref", "this service needs the reference of the person's authorization")
    return _Valid(index, keys, checks, kind)


def refuse_unknown_fields(service: VerificationService, claims: Sequence[Claim]) -> None:
    """Refuse the whole request if a claim names a key or field the service does not have.

    Before anything is signed: a signed answer would repeat the caller's made-up name.
    """
    for index, claim in enumerate(claims):
        if not set(claim.keys) <= set(service.keys):
            raise InvalidRequest(f"claims.{index}.keys: not a key of this service (keys: {', '.join(service.keys)})")
        if not set(claim.checks) <= set(service.fields):
            allowed = ", ".join(service.fields)
            raise InvalidRequest(f"claims.{index}.checks: not a field of this service (fields: {allowed})")


def _check_value(spec: FieldCheck, name: str, value: Any) -> Any:
    if spec.check is CheckKind.EQUALS:
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise _Invalid(f"checks.{name}", "give the value to compare, as text of 1 to 200 characters")
        return normalize_text(value)
    if spec.check is CheckKind.FIXED:
        if value is not True:
            raise _Invalid(f"checks.{name}", "a fixed condition is asked with true")
        return True
    if isinstance(value, bool) or not isinstance(value, int) or value not in spec.thresholds:
        allowed = ", ".join(str(t) for t in spec.thresholds)
        raise _Invalid(f"checks.{name}", f"choose a threshold from {allowed}")
    return value


def _matches(spec: FieldCheck, asked: Any, actual: Any) -> bool:
    if actual is None:
        return False
    if spec.check is CheckKind.EQUALS:
        return isinstance(actual, str) and normalize_text(actual) == asked
    if spec.check is CheckKind.FIXED:
        return bool(actual == spec.value)
    if spec.check is CheckKind.AT_LEAST:
        return bool(actual >= asked)
    return bool(actual <= asked)


def lookup_columns(service: VerificationService) -> list[str]:
    """Every column a claim on `service` may read, in one order: one lookup index per service,
    whichever fields a claim asks (an index per combination of fields would copy the dataset
    once for each)."""
    _first, *others = service.keys
    columns = [*others, *dict.fromkeys(spec.column for spec in service.fields.values())]
    if service.latest_by is not None:
        columns.append(service.latest_by)
    return columns


def _answer(
    rt: VerificationNeeds, service: VerificationService, version: str, columns: list[str], claim: _Valid
) -> Json:
    """The answer (no record value in it; the same shape whether the key is known or not);
    `columns`: the service's `lookup_columns`."""
    first, *others = service.keys
    rows = rt.domain.find(service.dataset, version, first, claim.keys[first], columns)
    rows = [r for r in rows if all(r[i] == claim.keys[k] for i, k in enumerate(others))]
    if not rows:
        # SECURITY: the same checks are run, on the claim's own values, and their outcome
        # dropped: an unknown key that answered at once would tell its absence by the time
        # taken, where `unknown_key: no_match` says nothing of it.
        for name, asked in claim.checks.items():
            spec = service.fields[name]
            _matches(spec, asked, spec.value if spec.check is CheckKind.FIXED else asked)
        result = "not_found" if service.unknown_key is UnknownKey.NOT_FOUND else "no_match"
        return {"result": result, "fields": dict.fromkeys(claim.checks, False)}
    # A NULL in the `latest_by` column sorts before every value (None does not compare).
    row = max(rows, key=lambda r: (r[-1] is not None, r[-1])) if service.latest_by is not None else rows[0]
    fields = {
        name: _matches(service.fields[name], asked, row[columns.index(service.fields[name].column)])
        for name, asked in claim.checks.items()
    }
    return {"result": "match" if all(fields.values()) else "no_match", "fields": fields}


def answers_in_memory(rt: VerificationNeeds, service_name: str) -> bool:
    """Whether `prepare` for this service reads only memory, so that it may run on the event
    loop; if not (an index to build, a dataset too large for one), it runs in a thread."""
    service = policy_admin.current(rt).bundle.verification_services.get(service_name)
    record = None if service is None else rt.catalog.find(service.dataset)
    if service is None or record is None or record.version is None:
        return True  # refused before any data is read
    return rt.domain.in_memory(service.dataset, record.version, service.keys[0], lookup_columns(service))


def warm_up(rt: VerificationNeeds) -> int:
    """Build the lookup index of every served verification service now, not on its first claim
    (building one reads the whole dataset version). Returns how many services were warmed."""
    bundle = policy_admin.current(rt).bundle
    warmed = 0
    for service in bundle.verification_services.values():
        record = rt.catalog.find(service.dataset)
        if record is None or not record.is_served or record.version is None:
            continue
        rt.domain.find(service.dataset, record.version, service.keys[0], "", lookup_columns(service))
        warmed += 1
    return warmed


@dataclass(frozen=True, slots=True)
class Prepared:
    """Steps 1-3 done: what the ledger must admit, and what the answers will be built from."""

    event: AuditEvent
    call: VerifyCall
    now: float
    grant_id: str
    service: VerificationService
    dataset_version: str
    policy_version: str
    valid: tuple[_Valid, ...]
    invalid: dict[int, Json]
    admission: VerificationRequest
    subjects: tuple[str, ...]


def prepare(
    rt: VerificationNeeds, principal: Principal, event: AuditEvent, call: VerifyCall, note: AuditNote
) -> Prepared:
    """Authorize, validate, look up and answer in the domain; nothing is counted or released yet."""
    now = time.time()
    service_name, purpose = call.service, call.purpose
    # 1. Authorize against the bundle in force (read once: a swap cannot split this request).
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    if service_name not in bundle.verification_services:
        raise NotFound("service: no verification service of this name")
    note.service = service_name
    grant_id, grant = authorize(bundle, principal, service_name, purpose, datetime.fromtimestamp(now, UTC))
    if service_name in policy.unavailable:
        raise ServiceUnavailable(f"service: unavailable: {policy.unavailable[service_name]}")
    service = bundle.verification_services[service_name]
    organisation = bundle.organisation_of(principal)
    check_not_frozen(
        rt.freezes.active(),
        consumer=principal.client_id,
        organisation=organisation,
        service=service_name,
        dataset=service.dataset,
    )
    if len(call.claims) > service.max_batch:
        raise InvalidRequest(f"claims: at most {service.max_batch} claims per request for this service")
    record = rt.catalog.get(service.dataset)
    if not record.is_served or record.version is None:  # cancelled since the bundle was checked
        raise ServiceUnavailable("service: unavailable: its dataset is not served")
    # 2. Validate every claim before any data is read; unknown names refuse the whole request.
    refuse_unknown_fields(service, call.claims)
    invalid: dict[int, Json] = {}
    valid: list[_Valid] = []
    for index, claim in enumerate(call.claims):
        try:
            valid.append(_validate(service, record.entry, claim, index))
        except _Invalid as bad:
            invalid[index] = {
                "claim": index,
                "result": "invalid",
                "error": {"field": bad.field, "message": bad.message},
            }
    # 3. Look up and answer in the domain; pseudonyms only from here on.
    uses: list[ClaimUse] = []
    columns = lookup_columns(service)
    answered: dict[tuple[tuple[str, ...], tuple[tuple[str, Any], ...]], Json] = {}
    for checked in valid:
        # SECURITY: noted before the lookup, so that one that fails still names its subject.
        key = rt.audit.pseudonym(checked.kind, "|".join(checked.keys[k] for k in service.keys))
        note.subjects.append(key)
        # A claim asked again in one request is answered once: fifty copies of one claim are
        # not fifty timings of the same record (nor fifty times the work).
        asked = sorted(checked.checks.items())
        same = (tuple(checked.keys[k] for k in service.keys), tuple(asked))
        answer = answered.get(same)
        if answer is None:
            answer = answered[same] = _answer(rt, service, record.version, columns, checked)
        asks = tuple(rt.audit.pseudonym("ask", canonical_text([service_name, key, n, v])) for n, v in asked)
        fingerprint = rt.audit.pseudonym("claim", canonical_text([service_name, key, asked]))
        # SECURITY: every claim asked is billable, known key or not: a bill that counted only
        # known keys would tell the consumer, through its own usage statement, which keys exist.
        uses.append(ClaimUse(fingerprint, key, asks, canonical_text(answer), billable=True))
    request = VerificationRequest(
        fee_micro_yuan_per_claim=fee_per_claim(bundle, service.price_class or grant.price_class, purpose),
        consumer=principal.client_id,
        organisation=organisation,
        grant=grant_id,
        service=service_name,
        purpose=purpose,
        limits=service.limits,
        daily_quota=grant.quotas.daily_claims,
        claims=uses,
    )
    return Prepared(
        event,
        call,
        now,
        grant_id,
        service,
        record.version,
        policy.version,
        tuple(valid),
        invalid,
        request,
        tuple(note.subjects),
    )


def pending_release(rt: VerificationNeeds, prepared: Prepared, admission: Admission) -> PendingRelease:
    """Step 5, first half: the answers as admitted (repeats get their stored ones) and the leaf."""
    answers: dict[int, Json] = dict(prepared.invalid)
    for checked, stored in zip(prepared.valid, admission.answers, strict=True):
        answers[checked.index] = {
            "claim": checked.index,
            **orjson.loads(stored),
            "transaction_id": f"{prepared.event.request_id}-{checked.index}",
        }
    call = prepared.call
    return prepare_release(
        rt,
        prepared.event,
        service=call.service,
        request=call.body,
        result={"purpose": call.purpose, "grant": prepared.grant_id, "answers": [answers[i] for i in sorted(answers)]},
        dataset=prepared.service.dataset,
        dataset_version=prepared.dataset_version,
        policy_version=prepared.policy_version,
        cost=Cost(quota_units=len(prepared.valid) - admission.repeats),
        subjects=prepared.subjects,
        grant=prepared.grant_id,
    )


def verify(
    rt: VerificationNeeds, principal: Principal, event: AuditEvent, call: VerifyCall, note: AuditNote
) -> Verified:
    """The whole use case, blocking: prepare, admit (step 4), release (step 5)."""
    prepared = prepare(rt, principal, event, call, note)
    admission = rt.ledger.admit_verification(prepared.admission, now=prepared.now)
    return Verified(release(rt, pending_release(rt, prepared, admission)), admission)
