"""The policy store on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
A change made through one handle (another process, or a replica) is seen by the others."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.errors import Conflict, NotFound, PolicyDenied
from gateway.policy import load_bundle
from gateway.state.policy import pretty
from gateway.state.policy_postgres import PostgresPolicyStore
from gateway.state.policy_sqlite import SqlitePolicyStore
from gateway.state.ports import PolicyStore
from tests.conftest import ON_POSTGRES, REPO, eventually, store_handles


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], PolicyStore]]:
    with store_handles(
        request.param,
        lambda: SqlitePolicyStore(tmp_path / "policy" / "policy.sqlite3"),
        lambda dsn, schema: PostgresPolicyStore(dsn, schema=schema),
    ) as factory:
        yield factory


def test_a_change_takes_two_administrators_and_reaches_every_handle(open_store: Callable[[], PolicyStore]) -> None:
    here, there = open_store(), open_store()
    demo = load_bundle(REPO / "policies")
    first = here.activate(demo, by="setup", reason="first import", base=None)
    assert first.active == demo.version and there.active_version() == demo.version
    changed = demo.model_copy(update={"grants": {k: v for k, v in demo.grants.items() if k != "bank-sme-credit-2026"}})
    before = there.stamp()
    with pytest.raises(Conflict):  # made from no version: another is in force
        here.propose(changed, by="admin-a", identity="person:a", note="x", approvals_required=2, base=None)
    proposed = here.propose(
        changed, by="admin-a", identity="person:a", note="contract ended", approvals_required=2, base=demo.version
    )
    assert proposed.active is None and "bank-sme-credit-2026" in proposed.proposal["diff"]  # type: ignore[index]
    proposal_id = proposed.proposal["id"]  # type: ignore[index]
    with pytest.raises(PolicyDenied):
        there.approve(proposal_id, by="admin-a", identity="person:a", approvals_required=2)
    with pytest.raises(PolicyDenied):  # a second account of the same person
        there.approve(proposal_id, by="admin-a2", identity="person:a", approvals_required=2)
    approved = there.approve(proposal_id, by="admin-b", identity="person:b", approvals_required=2)
    assert approved.active == changed.version
    eventually(lambda: here.stamp() != before and here.active_version() == changed.version)
    assert here.load(changed.version) == changed
    assert [h["action"] for h in here.history()] == ["activate", "propose", "approve", "activate"]
    base, target = here.rollback_target()
    assert (base, target) == (changed.version, demo.version)
    back = here.propose(
        here.load(target), by="cli:root", identity=None, note="rollback", approvals_required=2, base=base,
        rollback=True,
    )  # fmt: skip
    assert back.active is None  # the command line is nobody's approval
    back_id = back.proposal["id"]  # type: ignore[index]
    assert there.approve(back_id, by="admin-a", identity="person:a", approvals_required=2).active is None
    assert there.approve(back_id, by="admin-b", identity="person:b", approvals_required=2).active == demo.version
    eventually(lambda: here.active_version() == demo.version)
    with pytest.raises(Conflict):  # the version rolled back from is not an earlier one
        there.rollback_target()
    with pytest.raises(NotFound):
        here.load("no-such-version")


def _two_proposals(store: PolicyStore) -> tuple[str, str, str]:
    """The demo bundle in force and two open proposals of admin-a (person:a): ids and the first's version."""
    demo = load_bundle(REPO / "policies")
    store.activate(demo, by="setup", reason="first import", base=None)
    grants = dict(demo.grants)
    first = demo.model_copy(update={"grants": {k: v for k, v in grants.items() if k != "bank-sme-credit-2026"}})
    second = demo.model_copy(update={"grants": {k: v for k, v in grants.items() if k != "labour-research-2026"}})
    ids = [
        store.propose(bundle, by="admin-a", identity="person:a", note=note, approvals_required=2, base=demo.version)
        .proposal["id"]  # type: ignore[index]
        for bundle, note in ((first, "end one"), (second, "end another"))
    ]  # fmt: skip
    return ids[0], ids[1], first.version


def test_reject_and_withdraw_close_a_proposal_for_good(open_store: Callable[[], PolicyStore]) -> None:
    here, there = open_store(), open_store()
    rejected_id, withdrawn_id, version = _two_proposals(here)
    in_force = here.active_version()
    with pytest.raises(PolicyDenied):  # the proposer withdraws, never rejects
        there.reject(rejected_id, by="admin-a", identity="person:a", reason="x")
    with pytest.raises(PolicyDenied):  # nor with a second account of the same person
        there.reject(rejected_id, by="admin-a2", identity="person:a", reason="x")
    with pytest.raises(PolicyDenied):  # only the proposer withdraws
        there.withdraw(withdrawn_id, by="admin-b", identity="person:b", reason="x")
    with pytest.raises(NotFound):
        there.reject("0" * 12, by="admin-b", identity="person:b", reason="x")
    closed = there.reject(rejected_id, by="admin-b", identity="person:b", reason="grants <b>end</b> in 2027")
    assert closed.proposal["outcome"] == "rejected" and closed.proposal["version"] == version
    assert closed.entry == {**closed.entry, "action": "reject", "by": "admin-b", "proposal": rejected_id}
    # another account of the proposer's person may take it back
    withdrawn = here.withdraw(withdrawn_id, by="admin-a2", identity="person:a", reason="wrong grant")
    assert withdrawn.proposal["outcome"] == "withdrawn"
    assert here.proposals() == {} and there.proposals() == {}
    for proposal_id in (rejected_id, withdrawn_id):  # never approved, rejected or withdrawn again
        with pytest.raises(Conflict, match="already"):
            there.approve(proposal_id, by="admin-b", identity="person:b", approvals_required=1)
        with pytest.raises(Conflict):
            there.reject(proposal_id, by="admin-c", identity="person:c", reason="again")
        with pytest.raises(Conflict):
            here.withdraw(proposal_id, by="admin-a", identity="person:a", reason="again")
    assert here.active_version() == there.active_version() == in_force
    actions = [(h["action"], h.get("by"), h.get("reason")) for h in here.history()[-2:]]
    assert actions == [("reject", "admin-b", "grants <b>end</b> in 2027"), ("withdraw", "admin-a2", "wrong grant")]
    assert here.history()[-2:] == [closed.entry, withdrawn.entry]


def test_a_proposal_in_force_is_decided(open_store: Callable[[], PolicyStore]) -> None:
    store = open_store()
    proposal_id, _other, version = _two_proposals(store)
    assert store.approve(proposal_id, by="admin-b", identity="person:b", approvals_required=2).active == version
    with pytest.raises(Conflict, match="already activated"):
        store.reject(proposal_id, by="admin-c", identity="person:c", reason="too late")
    with pytest.raises(Conflict, match="already activated"):
        store.approve(proposal_id, by="admin-c", identity="person:c", approvals_required=2)


def test_a_command_line_proposal_is_withdrawn_by_that_user_and_rejected_by_anyone_else(
    open_store: Callable[[], PolicyStore],
) -> None:
    store = open_store()
    demo = load_bundle(REPO / "policies")
    store.activate(demo, by="setup", reason="first import", base=None)
    changed = demo.model_copy(update={"grants": {}})
    made = store.propose(changed, by="cli:ops", identity=None, note="reload", approvals_required=2, base=demo.version)
    proposal_id = made.proposal["id"]  # type: ignore[index]
    with pytest.raises(PolicyDenied):
        store.withdraw(proposal_id, by="cli:other", identity=None, reason="not mine")
    with pytest.raises(PolicyDenied):
        store.reject(proposal_id, by="cli:ops", identity=None, reason="mine")
    assert store.reject(proposal_id, by="admin-b", identity="person:b", reason="no").proposal["outcome"] == "rejected"


RACES = 12


def _race(**calls: Callable[[], object]) -> dict[str, object]:
    """Each call in its own thread, released at once; what each returned, or the Conflict it raised."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        start.wait()
        try:
            return call()
        except Conflict as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {name: pool.submit(run, call) for name, call in calls.items()}
    return {name: future.result() for name, future in futures.items()}


def test_a_concurrent_approve_and_reject_end_with_exactly_one_outcome(open_store: Callable[[], PolicyStore]) -> None:
    """The last approval and a rejection race through two handles (two processes or replicas):
    one wins whole, the other is refused with 409, and what is in force agrees with the winner."""
    approver, rejecter = open_store(), open_store()
    demo = load_bundle(REPO / "policies")
    approver.activate(demo, by="setup", reason="first import", base=None)
    outcomes: dict[str, int] = {"activated": 0, "rejected": 0}
    for round_ in range(RACES):
        base = approver.active_version()
        grants = {f"{k}-{round_}": v for k, v in demo.grants.items()}
        bundle = demo.model_copy(update={"grants": grants})
        made = approver.propose(bundle, by="admin-a", identity="person:a", note="race", approvals_required=2, base=base)
        proposal_id = made.proposal["id"]  # type: ignore[index]
        results = _race(
            approve=lambda pid=proposal_id: approver.approve(pid, by="b", identity="person:b", approvals_required=2),
            reject=lambda pid=proposal_id: rejecter.reject(pid, by="admin-c", identity="person:c", reason="race"),
        )
        won = [name for name, result in results.items() if not isinstance(result, Conflict)]
        assert len(won) == 1, results
        in_force = approver.active_version()
        if won == ["approve"]:
            outcomes["activated"] += 1
            assert in_force == bundle.version
        else:
            outcomes["rejected"] += 1
            assert in_force == base
        assert approver.proposals() == {}
        with pytest.raises(Conflict):  # decided, whichever way
            rejecter.approve(proposal_id, by="admin-d", identity="person:d", approvals_required=2)
    assert sum(outcomes.values()) == RACES


def test_the_policy_files_of_before_are_imported_once(tmp_path: Path) -> None:
    """An installation's `state/policy/` as the file store wrote it (`versions/<version>.json`,
    `state.json`) is copied into the new SQLite file on first open; `state.json` is kept as
    `state.json.imported`, and a later open copies nothing over the store."""
    directory = tmp_path / "policy"
    demo = load_bundle(REPO / "policies")
    changed = demo.model_copy(update={"grants": {k: v for k, v in demo.grants.items() if k != "bank-sme-credit-2026"}})
    (directory / "versions").mkdir(parents=True)
    for bundle in (demo, changed):
        (directory / "versions" / f"{bundle.version}.json").write_text(pretty(bundle), encoding="utf-8")
    history = [{"action": "activate", "at": "2026-01-01T00:00:00+00:00", "version": demo.version, "replaced": None,
                "proposed_by": "setup", "approved_by": [], "reason": "first import", "diff": ""}]  # fmt: skip
    proposal = {"id": "p1", "version": changed.version, "base": demo.version, "proposed_by": "admin-a",
                "proposed_at": "2026-01-02T00:00:00+00:00", "note": "x", "approvals": ["admin-a"],
                "identities": ["person:a"], "diff": ""}  # fmt: skip
    state = {"active": demo.version, "previous": [], "proposals": {"p1": proposal}, "closed": {}, "history": history}
    (directory / "state.json").write_text(json.dumps(state), encoding="utf-8")
    store = SqlitePolicyStore(directory / "policy.sqlite3", import_from=directory)
    try:
        assert store.state() == state and store.load(changed.version) == changed
        assert not (directory / "state.json").exists() and (directory / "state.json.imported").is_file()
        store.withdraw("p1", by="admin-a", identity="person:a", reason="not needed")
    finally:
        store.close()
    (directory / "state.json").write_text(json.dumps(state), encoding="utf-8")
    again = SqlitePolicyStore(directory / "policy.sqlite3", import_from=directory)
    try:
        assert again.proposals() == {} and (directory / "state.json").exists()
    finally:
        again.close()
