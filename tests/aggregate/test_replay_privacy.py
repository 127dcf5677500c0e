"""A stored release replayed to another consumer tells it nothing about who asked before, or when.

The attacker is a consumer who wants to learn whether (and when) someone else asked a question:
it asks that question and one nobody asked, and compares everything it can see of the two
answers: the signed document, its charge, its budget, its usage statement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.aggregate.conftest import Research

COUNT = "contributors-count"


def _second_consumer(bundle: dict[str, Any]) -> None:
    """The demo business gets its own research grant on the same templates."""
    bundle["organisations"]["demo-bank"]["budget"] = {"epsilon": "20", "delta": "0.0001"}
    grant = dict(bundle["grants"]["labour-research-2026"])
    bundle["grants"]["bank-research-2026"] = {**grant, "consumer": "demo-business"}


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    """What differs between two answers to different questions only through the question."""
    result = body["result"]
    return {
        "keys": sorted(body),
        "result_keys": sorted(result),
        "replayed": result["replayed"],
        "charged": result["charged"],
        "privacy_spent": body["privacy_spent"],
        "grant": result["grant"],
    }


def test_a_question_someone_else_asked_looks_like_a_new_one(research: Callable[..., Research]) -> None:
    researcher = research(_second_consumer)
    business = research(_second_consumer, who="demo-business")
    asked = {"parameters": {"group_by": ["region"]}, "epsilon": "0.4"}
    never_asked = {"parameters": {"group_by": ["industry"]}, "epsilon": "0.4"}
    first = researcher.release(COUNT, **asked)
    assert first.status_code == 200, first.text
    time.sleep(1.1)  # a second later: any time the first answer carried would differ from now
    before = datetime.now(UTC).timestamp()
    replay = business.release(COUNT, **asked)
    fresh = business.release(COUNT, **never_asked)
    assert replay.status_code == fresh.status_code == 200, replay.text
    # one question, one answer: the same noisy rows (no second draw of noise to average out)
    assert replay.json()["result"]["rows"] == first.json()["result"]["rows"]
    # the attacker's view of the replay is the view of a question nobody asked
    assert _shape(replay.json()) == _shape(fresh.json())
    assert replay.json()["result"]["replayed"] is False
    assert replay.json()["privacy_spent"] == {"epsilon": "0.4", "delta": "0"}
    assert "released_at" not in replay.json()["result"]
    assert replay.json()["iat"] >= int(before)  # the document's only time is this request's
    # its budget moved exactly as for a new question; the first asker's did not move again
    assert business.spent() == "0.8"
    assert researcher.spent() == "0.4"
    # asking again is this consumer's own repeat: free, and says so
    again = business.release(COUNT, **asked)
    assert again.json()["result"]["replayed"] is True and again.json()["privacy_spent"]["epsilon"] == "0"
    assert business.spent() == "0.8"


def test_a_release_stored_under_other_mechanisms_is_not_handed_on(
    research: Callable[..., Research], monkeypatch: Any
) -> None:
    """After an upgrade that changes how releases are made (epsilon shares, intervals, format),
    a release stored before it would differ from its own preview's noise and show that someone
    had asked. The mechanisms are part of the question, so the new payer's is a new release."""
    import importlib

    planning = importlib.import_module("gateway.domain.aggregate.plan")

    researcher = research(_second_consumer)
    business = research(_second_consumer, who="demo-business")
    asked = {"parameters": {"group_by": ["region"]}, "epsilon": "0.4"}
    first = researcher.release(COUNT, **asked)
    assert first.status_code == 200, first.text
    monkeypatch.setattr(planning, "MECHANISMS", "an upgrade")
    after = business.release(COUNT, **asked)
    assert after.status_code == 200, after.text
    assert after.json()["result"]["rows"] != first.json()["result"]["rows"]  # drawn anew, not handed on


def test_one_number_spelled_two_ways_is_one_question(research: Callable[..., Research]) -> None:
    """ "5.50" and 5.5 are the same bound: the second is a free replay, not fresh noise to average."""

    def amount_filter(bundle: dict[str, Any]) -> None:
        bundle["aggregate_templates"]["payroll-sum"]["filters"] = {"amount": {"range": [0, 100]}}

    researcher = research(amount_filter)
    spelled = [{"parameters": {"filters": {"amount": {"from": v}}}, "epsilon": "0.4"} for v in ("5.50", 5.5)]
    first, second = (researcher.release("payroll-sum", **ask) for ask in spelled)
    assert first.status_code == 200, first.text
    assert second.json()["result"]["replayed"] is True
    assert second.json()["result"]["rows"] == first.json()["result"]["rows"]
