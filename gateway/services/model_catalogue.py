"""Approved models (模型): the catalogue every consumer may read, and each model's version.

The catalogue shows the public part of a model's card (no bins, points or weights); the
version is a hash of the whole approved definition, named in every score and fit so that a
receipt says exactly which model answered.
"""

from __future__ import annotations

import hashlib

from gateway.domain.canonical_json import canonical
from gateway.domain.models import LinearRegressionFit, NaiveBayesFit, Scorer
from gateway.domain.trail import Json
from gateway.services import policy_admin
from gateway.services.policy_admin import PolicyReader

__all__ = ["catalogue", "model_version"]


def catalogue(rt: PolicyReader) -> list[Json]:
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
            "version": model_version(model),
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


def model_version(model: Scorer | LinearRegressionFit | NaiveBayesFit) -> str:
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
