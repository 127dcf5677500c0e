"""Approved models (模型): scoring one entity in the domain, and fitting models under DP.

Scoring (`POST /v1/models/{model}/score`):
1. authorize: a grant of this consumer covers the model and the purpose, now; nothing it
   reads is frozen;
2. validate every key (format and check character); an invalid key gets an error naming its
   index, and the valid ones are still scored;
3. compute the features in the domain and score them; only the score and/or grade leave;
4. admit in the ledger like verification: rates, the grant's quota, distinct entities, how
   often one entity is scored; the same entity and model version again gets its stored answer;
5. audit (keys as pseudonyms), sign, respond.

Fitting (`POST /v1/models/{model}/fit`): authorize, plan the charge from public facts, then
the shared charged-release protocol (services.charging): stored fit again for free, or
reserve, read sufficient statistics, add OpenDP noise, post-process, commit and store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gateway import privacy
from gateway.domain.aggregate import CONFIDENCE, epsilon_text
from gateway.domain.budget import Accounts, Amount
from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.identifiers import KEY_FORMATS, normalize_key
from gateway.domain.models import (
    FIT_KINDS,
    Feature,
    LinearRegressionFit,
    NaiveBayesFit,
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
from gateway.domain.trail import AuditEvent, Cost, Json, PrivacySpent, canonical
from gateway.errors import InternalError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.ledger import Admission, ClaimUse, VerificationRequest
from gateway.services import charging, policy_admin
from gateway.services.release import PendingRelease, Release, prepare_release, release
from gateway.services.runtime import Runtime
from gateway.services.verification import ENTITY_KINDS, AuditNote, fee_per_claim, stable_text

UNITS = 1000
"""Fixed point of a fit: every clamped value becomes a whole number in [-UNITS, UNITS]."""
MONTE_CARLO_DRAWS = 200


def catalogue(rt: Runtime) -> list[Json]:
    """Every approved model with the public part of its card (no bins, points or weights)."""
    policy = policy_admin.current(rt)
    out: list[Json] = []
    for name, model in sorted(policy.bundle.models.items()):
        entry: Json = {
            "name": name,
            "kind": model.kind,
            "title": model.title,
            "description": model.description,
            "card": model.card.model_dump(mode="json"),
            "version": _version(model),
            "available": name not in policy.unavailable,
        }
        if isinstance(model, Scorer):
            entry |= {
                "key": model.key,
                "features": {n: f.description for n, f in model.features.items()},
                "output": model.output,
                "grades": [g.grade for g in model.grades],
            }
        else:
            entry |= {
                "dataset": model.dataset,
                "features": list(model.features),
                "target": model.target,
                "epsilon": {"default": str(model.epsilon.default), "max": str(model.epsilon.max)},
            }
        out.append(entry)
    return out


_VERSIONS: dict[int, tuple[object, str]] = {}


def _version(model: Scorer | LinearRegressionFit | NaiveBayesFit) -> str:
    """What exactly was approved: a hash of the whole definition, computed once per model object
    (a bundle swap brings new objects; the cache holds the object, so an id is never reused)."""
    held = _VERSIONS.get(id(model))
    if held is not None and held[0] is model:
        return held[1]
    version = "sha256:" + hashlib.sha256(canonical(model.model_dump(mode="json"))).hexdigest()
    if len(_VERSIONS) > 1024:
        _VERSIONS.clear()
    _VERSIONS[id(model)] = (model, version)
    return version


# --- scoring -------------------------------------------------------------------------------------


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
    rt: Runtime, principal: Principal, event: AuditEvent, call: ScoreCall, note: AuditNote
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
        answer, known = _score_one(rt, model, versions, key, today)
        subject = rt.audit.pseudonym(ENTITY_KINDS[model.key_format], key)
        note.subjects.append(subject)
        question = stable_text([call.model, _version(model), subject])
        uses.append(
            ClaimUse(
                rt.audit.pseudonym("claim", question),
                subject,
                (rt.audit.pseudonym("ask", question),),
                stable_text(answer),
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


def _feature_columns(feature: Feature) -> list[str]:
    return [feature.column, *([feature.order_by] if feature.order_by else [])]


def warm_up(rt: Runtime) -> int:
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


def scores_in_memory(rt: Runtime, model_name: str) -> bool:
    """Whether `prepare_scoring` reads only memory (every feature's index is held), so that it may
    run on the event loop; if not, it runs in a thread."""
    model = policy_admin.current(rt).bundle.models.get(model_name)
    if not isinstance(model, Scorer):
        return True  # refused before any data is read
    for feature in model.features.values():
        record = rt.catalog.find(feature.dataset)
        if record is None or record.version is None:
            return True
        if not rt.domain.in_memory(feature.dataset, record.version, feature.key, _feature_columns(feature)):
            return False
    return True


def _score_one(rt: Runtime, model: Scorer, versions: dict[str, str], key: str, today: Any) -> tuple[Json, bool]:
    """The answer for one valid key (score and/or grade, or not_found), and whether it is known."""
    values: dict[str, Any] = {}
    known = False
    for name, feature in model.features.items():
        wanted = _feature_columns(feature)
        rows = rt.domain.find(feature.dataset, versions[feature.dataset], feature.key, key, wanted)
        if feature.dataset == model.entity_dataset and rows:
            known = True
        values[name] = feature_value(feature, [(r[0], r[1] if len(r) > 1 else None) for r in rows], today)
    if not known:
        return {"result": "not_found"}, False
    if isinstance(model, ScoringModel):
        points, grade = score(model, values)
    elif not isinstance(model, OnnxModel):  # the bundle's schema allows no third kind
        raise InternalError("a scoring model of no kind this gateway runs")
    else:
        (output,) = rt.onnx.run(
            model.file,
            model.sha256,
            input_name=model.input_name,
            output_name=model.output_name,
            rows=[onnx_row(model, values)],
        )
        points, grade = onnx_score(model, output)
    answer: Json = {"result": "scored"}
    if model.output in ("score", "both"):
        answer["score"] = points
    if model.output in ("grade", "both"):
        answer["grade"] = grade
    return answer, True


def pending_scoring(rt: Runtime, prepared: ScoringPrepared, admission: Admission) -> PendingRelease:
    answers: dict[int, Json] = dict(prepared.invalid)
    for index, stored in zip(prepared.valid, admission.answers, strict=True):
        answers[index] = {
            "entity": index,
            **json.loads(stored),
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
            "model_version": _version(prepared.model),
            "answers": [answers[i] for i in sorted(answers)],
        },
        dataset=prepared.model.entity_dataset,
        policy_version=prepared.policy_version,
        cost=Cost(quota_units=len(prepared.valid) - admission.repeats),
        subjects=prepared.subjects,
        grant=prepared.grant_id,
    )


# --- fitting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FitPlan:
    name: str
    model: LinearRegressionFit | NaiveBayesFit
    entry: CatalogEntry
    version: str
    grant_id: str
    purpose: str
    policy_version: str
    amount: Amount
    accounts: Accounts
    key: str


def authorize_fit(rt: Runtime, principal: Principal, name: str, purpose: str, epsilon: str | None) -> FitPlan:
    """Authorize and plan a fit from public facts; every refusal here costs nothing."""
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    model = bundle.models.get(name)
    if model is None or model.kind not in FIT_KINDS or isinstance(model, Scorer):
        raise NotFound("model: no model fitting template of this name")
    grant_id, _grant = authorize(bundle, principal, name, purpose, datetime.now(UTC))
    if name in policy.unavailable:
        raise ServiceUnavailable(f"model: unavailable: {policy.unavailable[name]}")
    organisation = bundle.organisation_of(principal)
    check_not_frozen(
        rt.freezes.active(),
        consumer=principal.client_id,
        organisation=organisation,
        service=name,
        dataset=model.dataset,
    )
    record = rt.catalog.get(model.dataset)
    if not record.is_served:
        raise ServiceUnavailable("model: unavailable: its dataset is not served")
    micro = model.epsilon.charge(epsilon, "model")
    key_material: dict[str, Any] = {
        "model": name,
        "definition": model.model_dump(mode="json"),
        "version": record.version,
        "micro_epsilon": micro,
    }
    return FitPlan(
        name=name,
        model=model,
        entry=record.entry,
        version=record.version,
        grant_id=grant_id,
        purpose=purpose,
        policy_version=policy.version,
        amount=Amount(micro, 0),
        accounts=bundle.budget_accounts(
            grant_id=grant_id,
            consumer=principal.client_id,
            organisation=organisation,
            dataset=model.dataset,
            version=record.version,
        ),
        key="fit:" + hashlib.sha256(canonical(key_material)).hexdigest(),
    )


def release_fit(rt: Runtime, event: AuditEvent, fit: FitPlan, body: Json) -> Release:
    """Charged once (or replayed free), audited, signed."""
    compute: Callable[[Callable[[], None]], Json] = functools.partial(_compute_fit, rt, fit)
    ((result, paid),) = charging.run(
        rt, [charging.Charge(fit.key, fit.amount, fit.accounts, compute, service=fit.name)]
    )
    charged = fit.amount if paid else Amount(0, 0)
    pending = prepare_release(
        rt,
        event,
        service=fit.name,
        request=body,
        result={"purpose": fit.purpose, "grant": fit.grant_id, **result, "replayed": not paid},
        dataset=fit.model.dataset,
        dataset_version=fit.version,
        policy_version=fit.policy_version,
        privacy_spent=PrivacySpent(epsilon=charged.epsilon, delta=charged.delta),
        cost=Cost(epsilon=charged.epsilon, delta=charged.delta),
        grant=fit.grant_id,
    )
    return release(rt, pending)


def _compute_fit(rt: Runtime, fit: FitPlan, reading: Callable[[], None]) -> Json:
    if isinstance(fit.model, LinearRegressionFit):
        body = _linear_regression(rt, fit, fit.model, reading)
    else:
        body = _naive_bayes(rt, fit, fit.model, reading)
    return {
        "model": fit.name,
        "kind": fit.model.kind,
        "model_version": _version(fit.model),
        "dataset": fit.model.dataset,
        "dataset_version": fit.version,
        "epsilon": epsilon_text(fit.amount.micro_epsilon),
        "delta": "0",
        "confidence": float(CONFIDENCE),
        **body,
    }


def _linear_regression(rt: Runtime, fit: FitPlan, model: LinearRegressionFit, reading: Callable[[], None]) -> Json:
    """Least squares from noisy sufficient statistics (X'X, X'y, y'y in fixed point).

    One row moves every product by at most UNITS^2, so one unit moves the whole vector by at
    most max_rows * entries * UNITS^2 in L1. Coefficient uncertainty combines the sampling
    error (residual variance times (X'X)^-1) and the DP noise (Monte Carlo over the published
    noise distribution); both are post-processing of the release and cost nothing.
    """
    names = [*model.features, model.target]
    bounds = []
    for name in names:
        low, high = fit.entry.column(name).bounds or (0.0, 0.0)
        bounds.append((name, float(low), float(high)))
    with rt.domain.snapshot(model.dataset, fit.version) as snapshot:
        reading()
        exact, _rows = snapshot.cross_products(bounds, UNITS)
    del _rows
    size = len(names) + 1  # intercept, features, target
    sensitivity = fit.entry.privacy_unit.max_rows * len(exact) * UNITS * UNITS
    noised = privacy.add_noise(exact, sensitivity, fit.amount.micro_epsilon)
    del exact
    stats = np.array(noised.values, dtype=float)
    beta, sampling_cov, rows, residual = _solve(stats, size, noised.scale)
    rng = np.random.default_rng()
    draws = []
    for _ in range(MONTE_CARLO_DRAWS):
        perturbed = stats + rng.laplace(0.0, noised.scale, size=stats.shape)
        draws.append(_solve(perturbed, size, noised.scale)[0])
    noise_std = np.std(np.array(draws), axis=0)
    std_u = np.sqrt(np.maximum(np.diag(sampling_cov), 0.0) + noise_std**2)
    largest = [max(abs(lo), abs(hi)) or 1.0 for _n, lo, hi in bounds]
    target_scale = largest[-1]
    factors = [target_scale, *(target_scale / b for b in largest[:-1])]
    coefficients = []
    for label, b, s, factor in zip(["intercept", *model.features], beta, std_u, factors, strict=True):
        value, std = float(b * factor), float(s * factor)
        z = 1.959963984540054
        coefficients.append(
            {
                "name": label,
                "value": round(value, 6),
                "std_error": round(std, 6),
                "interval": [round(value - z * std, 6), round(value + z * std, 6)],
            }
        )
    return {
        "coefficients": coefficients,
        "rows": max(0, round(rows)),
        "residual_std": round(float(np.sqrt(max(residual, 0.0))) * target_scale / UNITS, 6),
        "noise": {
            "mechanism": "discrete_laplace",
            "statistic": "sufficient statistics (X'X, X'y, y'y) in fixed point",
            "units": UNITS,
            "sensitivity": sensitivity,
            "scale": int(noised.scale) if noised.scale.is_integer() else noised.scale,
        },
    }


def _solve(stats: Any, size: int, scale: float) -> tuple[Any, Any, float, float]:
    """(beta in fixed-point units, sampling covariance, noisy row count, residual variance)."""
    full = np.zeros((size, size))
    position = 0
    for i in range(size):
        for j in range(i, size):
            full[i, j] = full[j, i] = stats[position]
            position += 1
    p = size - 1
    xtx, xty, yty = full[:p, :p], full[:p, p], full[p, p]
    # Plain least squares while the noisy X'X is positive definite. A ridge (a public constant)
    # only where it is not: it keeps the solve possible, but it shrinks the coefficients, and as
    # the rule it biased them by about a third of their standard error and left the stated 95%
    # intervals covering about 92% (measured over repeated fits).
    ridge = 0.0 if np.linalg.eigvalsh(xtx)[0] > 0 else 2.0 * scale
    regularised = xtx + ridge * np.eye(p)
    beta = np.linalg.solve(regularised, xty)
    rows = xtx[0, 0] / (UNITS * UNITS)
    residual = max(yty - 2 * beta @ xty + beta @ xtx @ beta, 0.0) / max(rows - p, 1.0)
    cov = residual * np.linalg.inv(regularised)
    return beta, cov, float(rows), float(residual)


def _categories(entry: CatalogEntry, column: str) -> list[Any]:
    col = entry.column(column)
    return [False, True] if col.type is ColumnType.BOOLEAN else list(col.categories or ())


def _naive_bayes(rt: Runtime, fit: FitPlan, model: NaiveBayesFit, reading: Callable[[], None]) -> Json:
    """Naive Bayes from noisy counts: class counts and class-by-value counts per feature.

    One row adds 1 to its class count and 1 to one cell of each feature's table, so one unit
    moves the vector by at most max_rows * (1 + features) in L1.
    """
    classes = _categories(fit.entry, model.target)
    tables: list[dict[tuple[Any, Any], int]] = []
    with rt.domain.snapshot(model.dataset, fit.version) as snapshot:
        reading()
        class_rows = snapshot.pair_counts(model.target, model.target)
        for feature in model.features:
            tables.append(snapshot.pair_counts(model.target, feature))
    exact = [class_rows.get((c, c), 0) for c in classes]
    for feature, table in zip(model.features, tables, strict=True):
        exact += [table.get((c, v), 0) for c in classes for v in _categories(fit.entry, feature)]
    del class_rows, tables
    sensitivity = fit.entry.privacy_unit.max_rows * (1 + len(model.features))
    noised = privacy.add_noise(exact, sensitivity, fit.amount.micro_epsilon)
    del exact
    half = privacy.half_width(noised.scale, 1 - float(CONFIDENCE))
    values = [max(0, v) for v in noised.values]
    class_counts = values[: len(classes)]
    total = sum(class_counts)
    out_classes = [
        {
            "class": c,
            "count": n,
            "interval": [max(0, raw - half), max(0, raw + half)],
            "prior": round((n + 1) / (total + len(classes)), 6),
        }
        for c, n, raw in zip(classes, class_counts, noised.values[: len(classes)], strict=True)
    ]
    conditionals: dict[str, list[Json]] = {}
    position = len(classes)
    for feature in model.features:
        categories = _categories(fit.entry, feature)
        rows: list[Json] = []
        for c in classes:
            counts = values[position : position + len(categories)]
            raws = noised.values[position : position + len(categories)]
            position += len(categories)
            for v, n, raw in zip(categories, counts, raws, strict=True):
                rows.append(
                    {
                        "class": c,
                        "value": v,
                        "count": n,
                        "interval": [max(0, raw - half), max(0, raw + half)],
                        "probability": round((n + 1) / (sum(counts) + len(categories)), 6),
                    }
                )
        conditionals[feature] = rows
    return {
        "classes": out_classes,
        "conditionals": conditionals,
        "smoothing": "add-one (Laplace) on the noisy counts",
        "noise": {
            "mechanism": "discrete_laplace",
            "statistic": "class counts and class-by-value counts",
            "sensitivity": sensitivity,
            "scale": int(noised.scale) if noised.scale.is_integer() else noised.scale,
            "half_width": half,
        },
    }
