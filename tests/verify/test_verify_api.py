"""POST /v1/verify/{service}: exact answers, one shape, signed, limited, and nothing of the record."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import CatalogStore
from gateway.engine import version_path
from gateway.services import aggregate, registration
from gateway.services.receipts import verify_receipt
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.ports import LeafFilter
from tests.conftest import CANARY, Installation, bearer, get_token
from tests.verify.conftest import Gateway, enterprises, valid_unknown_code


def _full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01...), which NFKC folds back."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_a_true_claim_matches_every_field(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    e = enterprises(gw.installation)[3]
    checks = {"name": e["name"], "legal_representative": e["legal_representative"], "active": True}
    response = gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": checks}])
    assert response.status_code == 200, response.text
    (answer,) = response.json()["result"]["answers"]
    expected_active = e["status"] == "active"
    assert answer["fields"] == {"name": True, "legal_representative": True, "active": expected_active}
    assert answer["result"] == ("match" if expected_active else "no_match")
    assert set(answer) == {"claim", "result", "fields", "transaction_id"}


def test_capital_tiers_follow_the_record(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=10)
    )
    for e in enterprises(gw.installation, 5):
        for tier in (1_000_000, 5_000_000, 10_000_000, 50_000_000):
            claim = {"keys": {"credit_code": e["credit_code"]}, "checks": {"registered_capital_at_least": tier}}
            (answer,) = gw.verify([claim]).json()["result"]["answers"]
            assert answer["fields"]["registered_capital_at_least"] is (e["registered_capital"] >= tier)


def test_inputs_are_normalised_but_matching_is_exact(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=20)
    )
    e = enterprises(gw.installation)[0]
    code, name = e["credit_code"], e["name"]
    cases: list[tuple[str, str, bool]] = [
        (code, name, True),
        (f"  {code.lower()} ", f"  {name}  ", True),  # spaces and the case of check characters
        (_full_width(code), unicodedata.normalize("NFKC", name), True),  # full-width forms
        (code, name[:-1], False),  # a prefix is not a match
        (code, name + "X", False),
        (code, "%", False),  # no pattern matching
        (code, name.replace(name[0], "_", 1), False),
    ]
    for key, supplied, expected in cases:
        (answer,) = gw.verify([{"keys": {"credit_code": key}, "checks": {"name": supplied}}]).json()["result"][
            "answers"
        ]
        assert answer["fields"]["name"] is expected, (key, supplied)


def test_a_batch_mixing_valid_invalid_and_unknown_keys(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    known = enterprises(gw.installation)[1]
    unknown = valid_unknown_code(gw.installation)
    claims: list[dict[str, Any]] = [
        {
            "keys": {"credit_code": known["credit_code"]},
            "checks": {"legal_representative": known["legal_representative"]},
        },
        {"keys": {"credit_code": known["credit_code"][:-1] + "?"}, "checks": {"active": True}},
        {"keys": {"credit_code": unknown}, "checks": {"legal_representative": known["legal_representative"]}},
        {"keys": {"credit_code": known["credit_code"]}, "checks": {"registered_capital_at_least": 3}},
        {"keys": {"credit_code": known["credit_code"]}, "checks": {"active": False}},
    ]
    answers = gw.verify(claims).json()["result"]["answers"]
    assert [a["claim"] for a in answers] == list(range(len(claims)))
    assert answers[0]["result"] == "match"
    assert answers[2]["result"] == "no_match"  # unknown answers like a non-match by default
    assert set(answers[2]) == set(answers[0]) and answers[2]["fields"] == {"legal_representative": False}
    invalid = {i: a["error"]["field"] for i, a in enumerate(answers) if a["result"] == "invalid"}
    assert invalid == {
        1: "keys.credit_code",
        3: "checks.registered_capital_at_least",
        4: "checks.active",
    }


def test_a_name_the_service_does_not_have_refuses_the_whole_batch(gateway_for: Callable[..., Gateway]) -> None:
    """A signed answer would repeat the made-up name: nothing is answered, signed or charged."""
    gw = gateway_for()
    known = enterprises(gw.installation)[1]
    valid = {"keys": {"credit_code": known["credit_code"]}, "checks": {"active": True}}
    for bad, where in (
        ({"keys": {"credit_code": known["credit_code"]}, "checks": {"colour-Q7": "red"}}, "claims.1.checks"),
        ({"keys": {"person_id-Q7": "1"}, "checks": {"active": True}}, "claims.1.keys"),
    ):
        refused = gw.verify([valid, bad])
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"].startswith(where)
        assert "Q7" not in refused.text and "receipt" not in refused.json()


def test_not_found_only_where_the_policy_says_so(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(lambda b: b["verification_services"]["enterprise-registration"].update(unknown_key="not_found"))
    claim = {"keys": {"credit_code": valid_unknown_code(gw.installation)}, "checks": {"active": True}}
    (answer,) = gw.verify([claim]).json()["result"]["answers"]
    assert answer["result"] == "not_found" and answer["fields"] == {"active": False}


def test_an_unknown_key_takes_the_work_of_a_known_one(gateway_for: Callable[..., Gateway], monkeypatch: Any) -> None:
    """`unknown_key: no_match` says nothing of whether a key exists, so neither may the time an
    answer takes: an unknown key's checks are run (on the claim's own values) as a known key's
    are, and fifty copies of one claim in a request are answered once, not timed fifty times.
    Counted in calls, not timed: the same calls of the same functions on either path."""
    from gateway.services import verification

    gw = gateway_for()
    known = enterprises(gw.installation)[3]
    checks = {
        "name": known["name"],
        "legal_representative": "张三",
        "active": True,
        "registered_capital_at_least": 1000000,
    }
    calls: dict[str, int] = {"matches": 0, "find": 0, "normalize": 0}
    for name, attr in (("matches", "_matches"), ("normalize", "normalize_text")):
        real = getattr(verification, attr)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(verification, attr, counted)
    domain = gw.client.app.state.runtime.domain
    real_find = domain.find

    def find(*args: Any) -> Any:
        calls["find"] += 1
        return real_find(*args)

    monkeypatch.setattr(domain, "find", find)
    seen = {}
    for label, code in (("known", known["credit_code"]), ("unknown", valid_unknown_code(gw.installation))):
        calls.update(dict.fromkeys(calls, 0))
        response = gw.verify([{"keys": {"credit_code": code}, "checks": checks}] * 50)
        assert response.status_code == 200, response.text
        seen[label] = dict(calls)
    assert seen["known"] == seen["unknown"]
    assert seen["known"]["find"] == 1 and seen["known"]["matches"] == len(checks)


def test_the_receipt_signs_the_whole_response(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    e = enterprises(gw.installation)[2]
    body = gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": {"active": True}}]).json()
    receipt = body.pop("receipt")
    document = verify_receipt(receipt, gw.client.get("/.well-known/jwks.json").json())
    assert document.model_dump(mode="json") == body
    assert document.service == "enterprise-registration" and document.dataset == "enterprise_registry"
    assert document.policy_version == gw.client.app.state.runtime.policy.current.version  # type: ignore[attr-defined]
    assert document.result["grant"] == "bank-sme-credit-2026" and document.result["purpose"] == "credit_assessment"


def test_nothing_of_the_record_or_the_input_comes_back(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=20)
    )
    rows = enterprises(gw.installation, 200)
    planted = next(e for e in rows if CANARY in e["name"] or CANARY in e["legal_representative"])
    texts: list[str] = []
    for supplied in (planted["name"], planted["legal_representative"], CANARY, "nobody"):
        for field in ("name", "legal_representative"):
            response = gw.verify([{"keys": {"credit_code": planted["credit_code"]}, "checks": {field: supplied}}])
            texts.append(response.text)
            texts.extend(f"{k}: {v}" for k, v in response.headers.items())
    assert not [t for t in texts if CANARY in t]
    assert not [t for t in texts if planted["credit_code"] in t]  # the key comes back neither
    log = SqliteAuditLog.open(gw.installation.settings.audit_dir)
    try:
        leaves = log.find(LeafFilter(service="enterprise-registration"), limit=1000)
    finally:
        log.close()
    dumped = json.dumps([leaf.model_dump(mode="json") for leaf in leaves])
    assert leaves and CANARY not in dumped and planted["credit_code"] not in dumped
    assert all(leaf.subjects and leaf.subjects[0].startswith("enterprise:") for leaf in leaves)


def test_policy_refusals(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    claim = [{"keys": {"credit_code": enterprises(gw.installation)[0]["credit_code"]}, "checks": {"active": True}}]
    assert gw.verify(claim, purpose="public_research").status_code == 403
    assert gw.verify(claim, service="no-such-service").status_code == 404
    researcher = gateway_for(who="demo-researcher")
    assert researcher.verify(claim).status_code == 403
    assert (
        gw.client.post(
            "/v1/verify/enterprise-registration", json={"purpose": "credit_assessment", "claims": claim}
        ).status_code
        == 401
    )
    too_many = gw.verify(claim * 51)
    assert too_many.status_code == 422 and "at most 50 claims" in too_many.json()["detail"]
    extra = gw.client.post(
        "/v1/verify/enterprise-registration",
        json={"purpose": "credit_assessment", "claims": claim, "debug": True},
        headers=gw.headers,
    )
    assert extra.status_code == 422


def test_an_expired_or_revoked_grant_is_refused_on_the_next_request(gateway_for: Callable[..., Gateway]) -> None:
    def expired(bundle: dict[str, Any]) -> None:
        bundle["grants"]["bank-sme-credit-2026"].update(
            not_before="2020-01-01T00:00:00Z", expires="2021-01-01T00:00:00Z"
        )

    gw = gateway_for(expired)
    claim = [{"keys": {"credit_code": enterprises(gw.installation)[0]["credit_code"]}, "checks": {"active": True}}]
    refused = gw.verify(claim)
    assert refused.status_code == 403 and "expired" in refused.json()["detail"]
    gw = gateway_for(lambda b: b["grants"].clear())
    assert gw.verify(claim).status_code == 403


def test_a_service_over_important_data_is_not_served(gateway_for: Callable[..., Gateway]) -> None:
    def person_service(bundle: dict[str, Any]) -> None:
        bundle["verification_services"]["insured"] = {
            "title": "Insured person",
            "dataset": "social_insurance",
            "keys": ["employer_code"],
            "latest_by": "month",
            "fields": {"paid": {"column": "paid", "check": "fixed", "value": True}},
        }
        bundle["grants"]["bank-sme-credit-2026"]["services"].append("insured")

    gw = gateway_for(person_service)
    refused = gw.verify(
        [{"keys": {"employer_code": "91110000MA00000008"}, "checks": {"paid": True}}], service="insured"
    )
    assert refused.status_code == 409
    assert "important data is served only through DP aggregates" in refused.json()["detail"]


def test_rate_limit_headers_count_down(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    e = enterprises(gw.installation)[0]
    first = gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": {"active": True}}])
    second = gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": {"name": "x"}}])
    assert first.headers["RateLimit-Policy"] == '"consumer";q=600;w=60, "quota";q=20000;w=86400'
    remaining = [int(r.headers["RateLimit"].split(";r=")[1].split(";")[0]) for r in (first, second)]
    assert remaining[1] == remaining[0] - 1 or remaining[1] == 599  # or a new minute began in between


@pytest.mark.parametrize("limit", [1, 3])
def test_the_probe_limit_trips_exactly_and_repeats_do_not_count(
    gateway_for: Callable[..., Gateway], limit: int
) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=limit)
    )
    code = enterprises(gw.installation)[0]["credit_code"]
    guesses = [f"guess {i}" for i in range(limit + 1)]
    for guess in guesses[:limit]:
        assert gw.verify([{"keys": {"credit_code": code}, "checks": {"name": guess}}]).status_code == 200
        again = gw.verify([{"keys": {"credit_code": code}, "checks": {"name": guess}}])  # a repeat: free
        assert again.status_code == 200
    refused = gw.verify([{"keys": {"credit_code": code}, "checks": {"name": guesses[limit]}}])
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "different questions about one entity" in refused.json()["detail"]
    other = enterprises(gw.installation)[1]["credit_code"]
    assert gw.verify([{"keys": {"credit_code": other}, "checks": {"name": "x"}}]).status_code == 200


def test_the_daily_quota_trips_exactly(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(lambda b: b["grants"]["bank-sme-credit-2026"].update(quotas={"daily_claims": 5}))
    rows = enterprises(gw.installation, 10)
    claims = [{"keys": {"credit_code": e["credit_code"]}, "checks": {"active": True}} for e in rows]
    assert gw.verify(claims[:3]).status_code == 200
    assert gw.verify(claims[3:6]).status_code == 429  # 3 + 3 > 5: the whole request is refused
    assert gw.verify(claims[3:5]).status_code == 200  # exactly 5
    assert gw.verify(claims[:3]).status_code == 200  # repeats are free
    refused = gw.verify(claims[5:6])
    assert refused.status_code == 429 and "daily quota of 5 claims" in refused.json()["detail"]


def test_the_distinct_key_cap_trips_exactly(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(distinct_keys_per_day=4)
    )
    rows = enterprises(gw.installation, 6)
    for e in rows[:4]:
        assert gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": {"active": True}}]).status_code == 200
    assert gw.verify([{"keys": {"credit_code": rows[0]["credit_code"]}, "checks": {"name": "n"}}]).status_code == 200
    refused = gw.verify([{"keys": {"credit_code": rows[4]["credit_code"]}, "checks": {"active": True}}])
    assert refused.status_code == 429 and "different entities a day" in refused.json()["detail"]


def test_the_request_rate_trips_exactly(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(
        lambda b: b["verification_services"]["enterprise-registration"]["limits"].update(consumer_per_minute=3)
    )
    code = enterprises(gw.installation)[0]["credit_code"]
    statuses = [gw.verify([{"keys": {"credit_code": code}, "checks": {"active": True}}]).status_code for _ in range(5)]
    # A refusal near the end of a minute window may fall into the next one; allow for that edge.
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]


def test_a_dataset_cancelled_while_serving_makes_its_service_unavailable(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    claim = [{"keys": {"credit_code": enterprises(gw.installation)[0]["credit_code"]}, "checks": {"active": True}}]
    assert gw.verify(claim).status_code == 200
    registration.cancel(CatalogStore(gw.installation.settings.data_path), "enterprise_registry", note="withdrawn")
    time.sleep(gw.installation.settings.state_recheck_seconds)  # another process's change: seen once looked for
    refused = gw.verify(claim)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/service-unavailable")


def test_a_key_put_in_the_url_is_not_logged(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    code = enterprises(gw.installation)[0]["credit_code"]
    response = gw.verify(_any_claim(gw), service=code)
    assert response.status_code == 422  # not a service name: refused at the edge
    leaf = gw.client.app.state.runtime.audit.find(LeafFilter(), limit=10_000)[-1]  # type: ignore[attr-defined]
    assert leaf.service is None and leaf.route == "/v1/verify/{service}"
    for stored in gw.installation.settings.audit_dir.iterdir():  # the database and its WAL
        assert code.encode() not in stored.read_bytes(), stored.name


def _any_claim(gw: Gateway) -> list[dict[str, Any]]:
    return [{"keys": {"credit_code": enterprises(gw.installation)[1]["credit_code"]}, "checks": {"active": True}}]


def test_answers_are_the_same_from_duckdb_lookups_as_from_the_memory_index(
    gateway_for: Callable[..., Gateway], installation: Installation
) -> None:
    rows = enterprises(installation, 6)

    def claims(*fields: str) -> list[dict[str, Any]]:
        values = {"legal_representative": lambda r: r["legal_representative"], "active": lambda _r: True}
        return [{"keys": {"credit_code": r["credit_code"]}, "checks": {f: values[f](r) for f in fields}} for r in rows]

    # Different questions on each path, so that no answer comes from the ledger's stored repeats.
    memory = gateway_for().verify(claims("legal_representative")).json()["result"]["answers"]
    settings = installation.settings.model_copy(update={"lookup_index_max_rows": 0})
    with TestClient(create_app(settings)) as client:
        token = bearer(get_token(client, "demo-business", installation.credentials["demo-business"]))
        body = {"purpose": "credit_assessment", "claims": claims("legal_representative", "active")}
        response = client.post("/v1/verify/enterprise-registration", json=body, headers=token)
    duckdb = response.json()["result"]["answers"]
    assert [a["fields"]["legal_representative"] for a in memory] == [True] * len(rows)
    assert [a["fields"]["legal_representative"] for a in duckdb] == [True] * len(rows)
    assert [a["fields"]["active"] for a in duckdb] == [r["status"] == "active" for r in rows]


def test_lookup_indexes_are_built_at_startup_one_per_service(gateway_for: Callable[..., Gateway]) -> None:
    """Built before the first claim (building one reads the dataset version), and one per service
    whichever fields are asked: an index per combination of fields would copy the data each time."""
    gw = gateway_for()
    domain = gw.client.app.state.runtime.domain  # type: ignore[attr-defined]
    assert domain.indexed() == []
    with gw.client:  # the server starts
        at_start = sorted(domain.indexed())
        assert ("enterprise_registry", "credit_code") in {(dataset, key) for dataset, _v, key, _c in at_start}
        e = enterprises(gw.installation)[0]
        for checks in ({"active": True}, {"name": e["name"]}, {"name": e["name"], "legal_representative": "x"}):
            assert gw.verify([{"keys": {"credit_code": e["credit_code"]}, "checks": checks}]).status_code == 200
        assert sorted(domain.indexed()) == at_start


def test_every_served_version_is_opened_at_startup(gateway_for: Callable[..., Gateway]) -> None:
    """Its column facts are read before any request: a release's time does not tell whether it
    was the first on its dataset or column since the process started."""
    gw = gateway_for()
    rt = gw.client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.domain.with_facts() == []
    with gw.client:
        served = {(r.entry.dataset, r.version) for r in rt.catalog.records() if r.is_served}
        assert len(served) >= 3 and set(rt.domain.with_facts()) == served
        assert aggregate.warm_up(rt) == []  # the periodic round finds nothing left to open


def test_a_dataset_that_cannot_be_opened_leaves_the_others_opened(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    rt = gw.client.app.state.runtime  # type: ignore[attr-defined]
    broken = rt.catalog.get("enterprise_registry")
    version_path(rt.settings.data_path, "enterprise_registry", broken.version).unlink()
    assert aggregate.warm_up(rt) == ["enterprise_registry"]
    served = {(r.entry.dataset, r.version) for r in rt.catalog.records() if r.is_served}
    assert set(rt.domain.with_facts()) == served - {("enterprise_registry", broken.version)}
