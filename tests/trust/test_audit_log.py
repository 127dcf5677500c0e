"""The audit log: durable, gap-free, one order across writers, keys only as pseudonyms."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import merkle
from gateway.domain.trail import AuditEvent, AuditLeaf, Checkpoint, Cost, Decision, LeafText
from gateway.errors import AuditUnavailable, ConfigurationError
from gateway.state.audit import AuditLogRules as AuditLog
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.ports import LeafFilter
from tests.trust.conftest import event


def test_appends_are_numbered_in_order_and_hashed_as_stored(audit_log: AuditLog) -> None:
    seqs = [audit_log.append_now(event(i)) for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    stored = list(audit_log.stored())
    assert [s.seq for s in stored] == seqs
    for row in stored:
        assert row.hash == merkle.leaf_hash(row.record)
        assert AuditLeaf.model_validate_json(row.record).encode() == row.record
    assert audit_log.root(5) == merkle.root([s.hash for s in stored])


def test_a_leaf_is_encoded_as_the_model_encodes_it() -> None:
    """The writer encodes leaves without building the model: the same bytes, whatever the event holds."""
    plain = event(7)
    charged = plain.model_copy(
        update={"cost": Cost(epsilon=Decimal("0.25"), quota_units=3), "subjects": ("enterprise:ab", "person:cd"),
                "service": "svc", "dataset": "ds", "reason": "中文 \u2028", "grant": None}
    )  # fmt: skip
    for made in (plain, charged):
        for seq in (0, 1, 2**40):
            assert AuditLeaf.encode_at(made, seq) == AuditLeaf.of(made, seq).encode()
    with pytest.raises(ValueError, match="seq"):
        AuditLeaf.encode_at(plain, -1)


_optional_text = st.none() | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        AuditEvent,
        time=st.text(max_size=24),
        request_id=st.text(min_size=1, max_size=32),
        principal=_optional_text,
        organisation=_optional_text,
        method=st.sampled_from(["GET", "POST"]),
        route=st.text(max_size=24),
        service=_optional_text,
        grant=_optional_text,
        dataset=_optional_text,
        dataset_version=_optional_text,
        decision=st.sampled_from(list(Decision)),
        reason=_optional_text,
        cost=st.none() | st.builds(Cost, quota_units=st.integers(0, 10**6), epsilon=st.decimals(0, 10, places=6)),
        result_digest=_optional_text,
        subjects=st.lists(st.text(max_size=8), max_size=3).map(tuple),
        status=st.integers(100, 599),
    ),
    st.integers(0, 2**53 - 1),
)
def test_a_leaf_numbered_from_its_encoded_halves_is_the_leaf_the_model_encodes(made: AuditEvent, seq: int) -> None:
    """Leaves are encoded before the log's lock and numbered under it by joining bytes: for any
    event and position, exactly the bytes of the leaf model (which the Merkle tree hashes)."""
    assert LeafText.of(made).at(seq) == AuditLeaf.of(made, seq).encode()
    for beyond in (-1, 2**53):
        with pytest.raises(ValueError, match="seq"):
            LeafText.of(made).at(beyond)


def test_concurrent_appends_share_commits_and_leave_no_gap(audit_log: AuditLog) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        seqs = list(pool.map(lambda i: audit_log.append_now(event(i)), range(400)))
    assert sorted(seqs) == list(range(400))
    by_seq = {leaf.seq: leaf.request_id for leaf in audit_log.find(LeafFilter(), limit=1000)}
    assert {by_seq[s] for s in seqs} == {f"req-{i:06d}" for i in range(400)}


def test_two_writers_on_one_log_keep_one_total_order(open_audit: Callable[[], AuditLog]) -> None:
    """Two processes or replicas (two AuditLog objects, each with its own writer) append to one log."""
    first, second = open_audit(), open_audit()

    def write(log: AuditLog, offset: int) -> list[int]:
        return [log.append_now(event(offset + i)) for i in range(100)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(write, (first, second), (0, 1000))
    assert sorted(a + b) == list(range(200))
    assert first.size() == second.size() == 200
    assert first.root(200) == second.root(200)
    assert first.inclusion_proof(7, 200) == second.inclusion_proof(7, 200)
    assert first.consistency_proof(50, 200) == second.consistency_proof(50, 200)


def test_leaves_are_found_by_subject_and_checkpoints_stored_once(audit_log: AuditLog) -> None:
    entity, other = audit_log.pseudonym("enterprise", "A"), audit_log.pseudonym("enterprise", "B")
    for i in range(6):
        audit_log.append_now(event(i, subjects=(entity,) if i % 2 else (other, entity) if i == 4 else (other,)))
    assert [leaf.seq for leaf in audit_log.find_subject(entity)] == [1, 3, 4, 5]
    assert audit_log.find_subject(audit_log.pseudonym("enterprise", "C")) == []
    head = Checkpoint(size=6, root=audit_log.root(6).hex(), time="2026-11-28T00:00:00.000Z", jws="x.y.z")
    assert audit_log.add_checkpoint(head)
    assert not audit_log.add_checkpoint(head)  # another replica made it first
    assert audit_log.latest_checkpoint() == head
    assert audit_log.checkpoints(after_size=5) == [head]


def test_a_leaf_is_on_disk_when_its_append_returns(tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit")
    seq = log.append_now(event(1))
    # Read with a fresh connection, as a process starting after a crash would.
    with sqlite3.connect(tmp_path / "audit" / "log.sqlite3") as conn:
        (record,) = conn.execute("SELECT record FROM leaves WHERE seq = ?", (seq,)).fetchone()
    assert AuditLeaf.model_validate_json(record).request_id == "req-000001"
    log.close()


def test_files_are_private(audit_log: AuditLog, tmp_path: Path) -> None:
    audit_log.append_now(event())
    for path in (tmp_path / "audit").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700


def test_a_readable_subject_key_is_refused(tmp_path: Path) -> None:
    SqliteAuditLog.open(tmp_path / "audit").close()
    (tmp_path / "audit" / "subject.key").chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        SqliteAuditLog.open(tmp_path / "audit")


def test_pseudonyms_are_keyed_stable_and_hide_the_key(tmp_path: Path) -> None:
    one, other = SqliteAuditLog.open(tmp_path / "one"), SqliteAuditLog.open(tmp_path / "other")
    key = "91330106MA2B3C4D5X"
    assert one.pseudonym("enterprise", key) == one.pseudonym("enterprise", key)
    assert one.pseudonym("enterprise", key) != one.pseudonym("person", key)
    assert one.pseudonym("enterprise", key) != other.pseudonym("enterprise", key)  # another domain secret
    seq = one.append_now(event(subjects=(one.pseudonym("enterprise", key),)))
    assert key not in (one.leaf(seq) or pytest.fail("leaf missing")).model_dump_json()
    assert key.encode() not in (tmp_path / "one" / "log.sqlite3").read_bytes()
    one.close()
    other.close()


def test_find_filters_and_pages(audit_log: AuditLog) -> None:
    for i in range(30):
        who = "demo-business" if i % 3 else "demo-researcher"
        audit_log.append_now(event(i, principal=who, status=200 if i % 2 else 403, dataset="tax_compliance"))
    mine = audit_log.find(LeafFilter(principal="demo-researcher"))
    assert [leaf.seq for leaf in mine] == list(range(0, 30, 3))
    refused = audit_log.find(LeafFilter(decision=Decision.REFUSED, principal="demo-business"))
    assert all(leaf.status == 403 and leaf.principal == "demo-business" for leaf in refused)
    assert len(refused) == 10
    page, seen = audit_log.find(LeafFilter(), limit=7), []
    while page:
        seen += [leaf.seq for leaf in page]
        page = audit_log.find(LeafFilter(), after=page[-1].seq, limit=7)
    assert seen == list(range(30))
    assert audit_log.find(LeafFilter(dataset="enterprise_registry")) == []
    later = audit_log.find(LeafFilter(since="2999-01-01T00:00:00.000Z"))
    assert later == []


def test_a_failed_commit_fails_every_waiter_and_writes_nothing(tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit", busy_timeout_seconds=0.05)
    log.append_now(event(0))
    blocker = sqlite3.connect(tmp_path / "audit" / "log.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock beyond the timeout
    try:
        waiting = [log.append(event(i)) for i in range(1, 4)]
        for future in waiting:
            with pytest.raises(AuditUnavailable):
                future.result(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    assert log.size() == 1
    assert log.append_now(event(9)) == 1  # the log recovers once the lock is gone
    log.close()


def test_a_closed_log_takes_nothing(tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit")
    log.append_now(event())
    log.close()
    with pytest.raises(AuditUnavailable):
        log.append(event())


def test_appends_from_many_threads_while_closing_all_resolve(tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit")
    futures = [log.append(event(i)) for i in range(200)]
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join()
    assert sorted(f.result(timeout=10) for f in futures) == list(range(200))


def test_a_witness_stops_on_a_gateway_that_repeats_its_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page cursor is the size the gateway lists: one page served again and again kept a
    witness asking for ever. Sizes must grow page after page."""
    from gateway.errors import SignatureInvalid
    from gateway.services import audit_trail

    asked: list[str] = []
    same = {"checkpoints": [{"size": 5, "root": "00" * 32, "time": "2026-12-01T00:00:00Z", "jws": "x"}]}

    def hostile(url: str) -> dict[str, object]:
        asked.append(url)
        return same

    monkeypatch.setattr(audit_trail, "load_jwks", lambda _url: {"keys": []})
    monkeypatch.setattr(audit_trail, "fetch_json", hostile)
    with pytest.raises(SignatureInvalid, match="do not grow"):
        audit_trail.witness("https://gateway.example", None)
    assert len(asked) == 2
