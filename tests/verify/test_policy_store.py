"""The policy store on both backends: files always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
A change made through one handle (another process, or a replica) is seen by the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import Conflict, NotFound, PolicyDenied
from gateway.policy import load_bundle
from gateway.policy_store import FilePolicyStore, PolicyStore, PostgresPolicyStore
from tests.conftest import ON_POSTGRES, REPO, eventually, store_handles


@pytest.fixture(params=["files", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], PolicyStore]]:
    with store_handles(
        request.param,
        lambda: FilePolicyStore(tmp_path / "policy"),
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
