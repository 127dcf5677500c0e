"""Admissions and leaves written from the event loop on PostgreSQL (`AsyncCommitter`): limits hold
exactly across replicas, leaves are numbered once across replicas, a cut connection fails one
batch and the next one runs on a new connection, and refusals still raise their alerts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.domain.limits import VerificationLimits
from gateway.domain.trail import Cost
from gateway.errors import DependencyError, RateLimited
from gateway.state import postgres_connections
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.ledger_admission import DAY
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ports import Admission, LeafFilter
from tests.conftest import PG_DSN, eventually, needs_pg, pg_schema
from tests.trust.conftest import event
from tests.verify.test_ledger import NOON, claim, request

pytestmark = needs_pg


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


def _ledgers(schema: str, count: int) -> list[PostgresLedger]:
    assert PG_DSN is not None
    return [PostgresLedger(PG_DSN, schema=schema) for _ in range(count)]


def _cut(application_name: str) -> None:
    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      (application_name,))  # fmt: skip


@pytest.mark.parametrize("server_default", [None, "repeatable\\ read"])
def test_two_replicas_on_the_loop_path_share_one_quota_exactly(
    schema: str, server_default: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also when the server's default isolation (here the client's, through PGOPTIONS) is
    REPEATABLE READ: a batch takes its lock, then reads, and a snapshot taken by the lock's
    statement would predate the commit it waited for. Stale reads show as batches failed on
    serialization errors (503s) or as admissions past the quota; every connection sets READ
    COMMITTED itself."""
    if server_default is not None:
        monkeypatch.setenv("PGOPTIONS", f"-c default_transaction_isolation={server_default}")
    first, second = _ledgers(schema, 2)

    async def scenario(day: int) -> list[Admission | BaseException]:
        calls = [
            (first if i % 2 else second).admit_verification_async(request(claim(f"k{i}"), quota=30), now=NOON + day)
            for i in range(80)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        for day in range(0, 5 * DAY, DAY):  # a race shows in some rounds, not all: several rounds
            outcomes = asyncio.run(scenario(day))
            assert sum(isinstance(o, Admission) for o in outcomes) == 30
            assert all(isinstance(o, Admission | RateLimited) for o in outcomes), outcomes
            with pytest.raises(RateLimited, match="daily quota of 30"):  # the blocking path agrees
                second.admit_verification(request(claim("one more"), quota=30), now=NOON + day)
        assert [row[4] for row in first.usage("g1")] == [30] * 5
    finally:
        first.close()
        second.close()


def test_the_loop_path_fails_one_batch_when_its_connection_is_cut_and_then_recovers(schema: str) -> None:
    (ledger,) = _ledgers(schema, 1)

    async def scenario() -> None:
        await ledger.admit_verification_async(request(claim("a"), quota=3), now=NOON)
        _cut("veilgate-ledger")
        with pytest.raises(DependencyError, match="ledger is unavailable"):
            await ledger.admit_verification_async(request(claim("b"), quota=3), now=NOON)
        await ledger.admit_verification_async(request(claim("b"), quota=3), now=NOON)
        await ledger.admit_verification_async(request(claim("c"), quota=3), now=NOON)
        with pytest.raises(RateLimited, match="daily quota of 3"):  # the failed one counted nothing
            await ledger.admit_verification_async(request(claim("d"), quota=3), now=NOON)

    try:
        asyncio.run(scenario())
    finally:
        ledger.close()


def test_alerts_from_the_loop_path_are_raised_once(schema: str) -> None:
    """The rate alert is written with its admission; a refusal's alert after the COMMIT."""
    (ledger,) = _ledgers(schema, 1)
    limits = VerificationLimits(probe_checks_per_key=1, consumer_per_minute=2)

    async def scenario() -> None:
        await ledger.admit_verification_async(request(claim("k", "q1"), limits=limits), now=NOON)
        with pytest.raises(RateLimited, match="1 different questions"):
            await ledger.admit_verification_async(request(claim("k", "q2"), limits=limits), now=NOON)
        await ledger.admit_verification_async(request(claim("m", "q1"), limits=limits), now=NOON)  # 2 of 2

    try:
        asyncio.run(scenario())
        eventually(lambda: sorted(a["kind"] for a in ledger.alerts()) == ["probe_limit", "rate_80"])
    finally:
        ledger.close()


def test_leaves_from_the_loop_of_two_replicas_are_numbered_once(schema: str, tmp_path: Path) -> None:
    assert PG_DSN is not None
    logs = [PostgresAuditLog(PG_DSN, schema=schema, key_directory=tmp_path / "audit") for _ in range(2)]

    async def append(numbers: range) -> list[int]:
        return await asyncio.gather(*(logs[n % 2].append_async(event(n)) for n in numbers))

    async def scenario() -> None:
        seqs = await append(range(60))
        assert sorted(seqs) == list(range(60))
        for seq, n in zip(seqs, range(60), strict=True):  # each caller got its own leaf's place
            leaf = logs[0].leaf(seq)
            assert leaf is not None and leaf.request_id == event(n).request_id
        _cut("veilgate-audit")
        with pytest.raises(Exception, match="audit log cannot be written"):
            await append(range(60, 120))
        assert sorted(await append(range(60, 120))) == list(range(60, 120))  # nothing of the failed ones

    try:
        asyncio.run(scenario())
        assert logs[1].size() == 120
    finally:
        for log in logs:
            log.close()


def _replicas(schema: str, tmp_path: Path, count: int) -> list[tuple[PostgresLedger, PostgresAuditLog, Any]]:
    """`count` replicas, each with its ledger, its log and their releases in one transaction."""
    from gateway.state.releases import PostgresReleases

    assert PG_DSN is not None
    out = []
    for _ in range(count):
        ledger = PostgresLedger(PG_DSN, schema=schema)
        log = PostgresAuditLog(PG_DSN, schema=schema, key_directory=tmp_path / "audit")
        out.append((ledger, log, PostgresReleases(PG_DSN, schema, ledger, log)))
    return out


def _close(replicas: list[tuple[PostgresLedger, PostgresAuditLog, Any]]) -> None:
    for ledger, log, releases in replicas:
        releases.close()
        ledger.close()
        log.close()


def test_admissions_and_their_leaves_commit_together_and_limits_hold_across_replicas(
    schema: str, tmp_path: Path
) -> None:
    """One transaction a batch for both stores: exactly the quota is admitted across two
    replicas, every admitted request has exactly its own leaf, a refused one none."""
    replicas = _replicas(schema, tmp_path, 2)

    def build(n: int) -> Any:
        return lambda admission: (n, event(n))

    async def scenario() -> list[Any]:
        calls = [
            replicas[i % 2][2].admit_and_log(request(claim(f"k{i}"), quota=30), now=NOON, build=build(i))
            for i in range(80)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        outcomes = asyncio.run(scenario())
        admitted = [o for o in outcomes if isinstance(o, tuple)]
        assert len(admitted) == 30 and all(isinstance(o, tuple | RateLimited) for o in outcomes), outcomes
        assert sorted(seq for _a, _n, seq in admitted) == list(range(30))  # one leaf each, numbered once
        log = replicas[0][1]
        for admission, n, seq in admitted:
            leaf = log.leaf(seq)
            assert isinstance(admission, Admission) and leaf is not None and leaf.request_id == event(n).request_id
        assert log.size() == 30 and [row[4] for row in replicas[0][0].usage("g1")] == [30]
    finally:
        _close(replicas)


def test_a_batch_that_fails_leaves_neither_its_charges_nor_its_leaves(
    schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leaves of a batch cannot be written after its admissions were: the COMMIT never
    happens, so nothing of the batch was counted either."""
    from gateway.state import releases as releases_module

    (replica,) = _replicas(schema, tmp_path, 1)
    _ledger, log, releases = replica

    def broken(_batch: Any, _next_seq: int) -> Any:
        raise RuntimeError("the disk is full")

    async def scenario() -> None:
        await releases.admit_and_log(request(claim("a"), quota=2), now=NOON, build=lambda a: (None, event(0)))
        with monkeypatch.context() as patched:
            patched.setattr(releases_module, "numbered", broken)
            with pytest.raises(DependencyError, match="nothing was released"):
                await releases.admit_and_log(request(claim("b"), quota=2), now=NOON, build=lambda a: (None, event(1)))
        await releases.admit_and_log(request(claim("b"), quota=2), now=NOON, build=lambda a: (None, event(2)))
        with pytest.raises(RateLimited, match="daily quota of 2"):  # the failed one counted nothing
            await releases.admit_and_log(request(claim("c"), quota=2), now=NOON, build=lambda a: (None, event(3)))

    try:
        asyncio.run(scenario())
        kept = [log.leaf(seq) for seq in (0, 1)]
        assert log.size() == 2 and [k.request_id for k in kept if k] == [event(0).request_id, event(2).request_id]
    finally:
        _close([replica])


def test_a_leaf_that_cannot_be_built_fails_its_own_request_before_any_lock(schema: str, tmp_path: Path) -> None:
    """Nothing is charged without its leaf. A release is built before the stores' locks, on the
    admission presumed: one whose leaf cannot be built fails there, counts nothing and holds
    no lock, and the requests beside it are released with their leaves."""
    (replica,) = _replicas(schema, tmp_path, 1)
    ledger, log, releases = replica

    def broken(_admission: Any) -> Any:
        raise ValueError("a bug in building the leaf")

    async def scenario() -> list[Any]:
        calls = [
            releases.admit_and_log(
                request(claim(f"k{i}"), quota=10), now=NOON, build=broken if i == 1 else (lambda a, i=i: (i, event(i)))
            )
            for i in range(3)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        outcomes = asyncio.run(scenario())
        assert isinstance(outcomes[1], ValueError)
        assert [o[1:] for o in (outcomes[0], outcomes[2])] == [(0, 0), (2, 1)]
        assert log.size() == 2 and [k.request_id for k in (log.leaf(0), log.leaf(1)) if k] == [
            event(0).request_id,
            event(2).request_id,
        ]
        assert sum(row[4] for row in ledger.usage("g1")) == 2
    finally:
        _close([replica])


def test_a_leaf_that_cannot_be_rebuilt_under_the_locks_fails_its_batch_and_charges_nothing(
    schema: str, tmp_path: Path
) -> None:
    """An admission other than presumed (here a repeat, answered from the ledger) is built again
    while the locks are held; if that fails, the whole batch fails: every request of it learns
    that nothing was released, and nothing of it is counted or logged."""
    (replica,) = _replicas(schema, tmp_path, 1)
    ledger, log, releases = replica

    def broken_on_repeats(admission: Admission) -> Any:
        if admission.repeats:
            raise ValueError("a bug in building the leaf of a repeat")
        return None, event(admission.repeats)

    async def scenario() -> list[Any]:
        await releases.admit_and_log(request(claim("k0"), quota=10), now=NOON, build=broken_on_repeats)
        calls = [
            releases.admit_and_log(request(claim(key), quota=10), now=NOON, build=broken_on_repeats)
            for key in ("k0", "k1", "k2")
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        outcomes = asyncio.run(scenario())
        assert all(isinstance(o, DependencyError) for o in outcomes), outcomes
        assert log.size() == 1 and sum(row[4] for row in ledger.usage("g1")) == 1
    finally:
        _close([replica])


def test_an_alert_kept_out_by_its_dedupe_key_is_not_logged_again(schema: str, caplog: pytest.LogCaptureFixture) -> None:
    """In pipeline mode a statement's rowcount is not known yet: every refusal logged the alert
    its dedupe key had kept out of the table."""
    (ledger,) = _ledgers(schema, 1)
    try:
        ledger.admit_verification(request(claim("a"), quota=1), now=NOON)
        with caplog.at_level("WARNING", logger="veilgate.ledger"):
            for key in "bcdef":
                with pytest.raises(RateLimited):
                    ledger.admit_verification(request(claim(key), quota=1), now=NOON)
            eventually(lambda: any(a["kind"] == "quota_limit" for a in ledger.alerts()))
            ledger.raise_alert("probe", "x", "a last job, so the refusal notes before it are done")
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT quota_limit")]
        assert len(logged) == 1 and sum(a["kind"] == "quota_limit" for a in ledger.alerts()) == 1
    finally:
        ledger.close()


@pytest.mark.parametrize("rows", [0, 1, 3, 63, 64, 65, 130, 777])
def test_insert_many_writes_every_row_once_in_chunks_of_few_texts(schema: str, rows: int) -> None:
    """Several rows per statement (chunks of 2^k, at most 64): every row lands once, whatever the
    count, and an ON CONFLICT clause after the row still applies to each."""
    assert PG_DSN is not None
    sql = "INSERT INTO t VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n"

    async def scenario() -> list[tuple[Any, ...]]:
        db = await postgres_connections.connect_async(PG_DSN, schema, name="veilgate-test", unavailable="down")
        try:
            await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            await db.insert_many(sql, [(f"k{i}", i) for i in range(rows)])
            await db.insert_many(sql, [(f"k{i}", 1000) for i in range(0, rows, 2)])  # conflicts add
            return await db.rows("SELECT k, n FROM t ORDER BY n, k")
        finally:
            db.close()

    stored = dict(asyncio.run(scenario()))
    assert stored == {f"k{i}": i + (1000 if i % 2 == 0 else 0) for i in range(rows)}


def _costed(n: int) -> Any:
    """A build that makes (answers, repeats) and a leaf charged one unit per fresh claim."""

    def build(admission: Admission) -> Any:
        fresh = len(admission.answers) - admission.repeats
        return (admission.answers, admission.repeats), event(n).model_copy(update={"cost": Cost(quota_units=fresh)})

    return build


def test_a_repeat_is_released_as_the_ledger_admitted_it_not_as_presumed(schema: str, tmp_path: Path) -> None:
    """Releases are built before the locks on the admission presumed (no claim answered before).
    A repeat is admitted otherwise: it must be released with the stored answer and a leaf that
    charged nothing, whether its first asking was in an earlier batch or in the same one, and a
    request asking one claim twice with two answers gets the first twice, charged once."""
    (replica,) = _replicas(schema, tmp_path, 1)
    ledger, log, releases = replica

    def ask(key: str, *answers: str, n: int) -> Any:
        claims = [claim(key, answer=answer) for answer in answers]
        return releases.admit_and_log(request(*claims, quota=10), now=NOON, build=_costed(n))

    async def scenario() -> list[Any]:
        earlier = await ask("k", '{"v":"old"}', n=0)
        together = await asyncio.gather(
            ask("j", '{"v":"first"}', n=1), ask("j", '{"v":"second"}', n=2), ask("d", '{"v":"a"}', '{"v":"b"}', n=3)
        )
        return [earlier, await ask("k", '{"v":"new"}', n=4), *together]

    try:
        outcomes = asyncio.run(scenario())
        made = [m for _admission, m, _seq in outcomes]
        assert made == [
            (('{"v":"old"}',), 0),
            (('{"v":"old"}',), 1),
            (('{"v":"first"}',), 0),
            (('{"v":"first"}',), 1),
            (('{"v":"a"}', '{"v":"a"}'), 1),
        ]
        leaves = [log.leaf(seq) for _admission, _made, seq in outcomes]
        assert [leaf.cost.quota_units for leaf in leaves if leaf and leaf.cost] == [1, 0, 1, 0, 1]
        assert sum(row[4] for row in ledger.usage("g1")) == 3  # what the leaves charged
    finally:
        _close([replica])


def test_releases_and_the_logs_own_appends_are_numbered_once(schema: str, tmp_path: Path) -> None:
    """A release batch holds the log's lock as well as the ledger's: leaves appended at the same
    time by another replica's log alone (refusals, admin actions) take their turn, and every leaf
    gets its own `seq`, none lost and none failed."""
    (replica,) = _replicas(schema, tmp_path, 1)
    _ledger, log, releases = replica
    other = PostgresAuditLog(PG_DSN or "", schema=schema, key_directory=tmp_path / "audit")

    async def scenario() -> list[Any]:
        outcomes: list[Any] = []
        for round_ in range(20):
            calls = [
                releases.admit_and_log(
                    request(claim(f"k{round_}-{i}"), quota=10_000), now=NOON, build=lambda a, i=i: (i, event(i))
                )
                for i in range(8)
            ]
            calls += [other.append_async(event(100 + i)) for i in range(8)]
            outcomes += await asyncio.gather(*calls, return_exceptions=True)
        return outcomes

    try:
        outcomes = asyncio.run(scenario())
        assert not [o for o in outcomes if isinstance(o, BaseException)]
        assert log.size() == 320 and [leaf.seq for leaf in log.find(LeafFilter(), limit=1000)] == list(range(320))
    finally:
        other.close()
        _close([replica])


def test_insert_many_sends_up_to_sixteen_rows_in_one_statement_and_at_most_sixty_four() -> None:
    for rows in range(0, 300):
        sizes = list(postgres_connections.chunk_sizes(rows))
        assert sum(sizes) == rows and all(1 <= size <= 64 for size in sizes)
        if rows <= 16:
            assert sizes == ([rows] if rows else [])
        else:  # the largest power of two first, so a remainder of 16 rows or fewer goes in one
            assert all(size in (16, 32, 64) for size in sizes[:-1]) and sizes == sorted(sizes, reverse=True)
    texts = {size for rows in range(300) for size in postgres_connections.chunk_sizes(rows)}
    assert len(texts) == 18  # 1 to 16, 32 and 64: what a writer's connection keeps prepared per table


def test_the_writers_sql_takes_postgresqls_own_placeholders_and_refuses_dollars_and_percents() -> None:
    assert postgres_connections._numbered("SELECT ? FROM t WHERE a = ? AND b = 'c'") == (
        b"SELECT $1 FROM t WHERE a = $2 AND b = 'c'"
    )
    for refused in ("SELECT $1", "SELECT ? WHERE a LIKE 'x%'"):
        with pytest.raises(ValueError, match="placeholders only"):
            postgres_connections._numbered(refused)


def test_insert_many_takes_only_an_insert_of_one_values_row() -> None:
    assert postgres_connections._multi_row("INSERT INTO t VALUES (?, ?) ON CONFLICT DO NOTHING", 3) == (
        b"INSERT INTO t VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING"
    )
    for refused in ("UPDATE t SET n = ?", "INSERT INTO t VALUES (?, lower(?))", "INSERT INTO t SELECT ?"):
        with pytest.raises(ValueError, match="takes an INSERT"):
            postgres_connections._multi_row(refused, 2)


def test_insert_many_in_a_transaction_that_fails_leaves_no_row(schema: str) -> None:
    """Chunks of one batch are one transaction's statements: a row that fails (here the 70th of
    100, a duplicate key) rolls back the chunks before it as well."""
    assert PG_DSN is not None

    async def scenario() -> list[tuple[Any, ...]]:
        db = await postgres_connections.connect_async(PG_DSN, schema, name="veilgate-test", unavailable="down")
        try:
            await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            rows = [(f"k{i}", i) for i in range(100)]
            rows[70] = ("k3", 70)

            async def batch() -> None:
                async with db.pipeline():
                    await db.execute("BEGIN")
                    await db.insert_many("INSERT INTO t VALUES (?, ?)", rows)
                    await db.execute("COMMIT")

            with pytest.raises(psycopg.errors.UniqueViolation):
                await batch()
            await db.execute("ROLLBACK")
            return await db.rows("SELECT k FROM t")
        finally:
            db.close()

    assert asyncio.run(scenario()) == []


def test_insert_many_is_prepared_once_whatever_the_sizes_of_its_integers(schema: str) -> None:
    """psycopg prepares a statement per text and parameter types: ints of mixed sizes (a
    minute's window and a day's) typed int2, int4 or int8 each would keep it from ever being
    prepared. The writers' connections send every int as int8."""
    assert PG_DSN is not None

    async def scenario() -> int:
        db = await postgres_connections.connect_async(PG_DSN, schema, name="veilgate-test", unavailable="down")
        try:
            await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, w BIGINT NOT NULL)")
            for batch in range(20):
                rows = [(f"k{batch}-{i}", (5, 70_000, 2**40)[(batch + i) % 3]) for i in range(64)]
                await db.insert_many("INSERT INTO t VALUES (?, ?)", rows)
            ((prepared,),) = await db.rows("SELECT count(*) FROM pg_prepared_statements")
            return int(prepared)
        finally:
            db.close()

    assert asyncio.run(scenario()) == 1


def test_every_connection_reads_committed_rows_and_plans_each_execution(schema: str) -> None:
    """The settings every store's connections run with, whatever the server's defaults: READ
    COMMITTED (see the test above) and a plan per execution (a generic plan made while the
    ledger's tables were small kept scanning them whole as they grew)."""
    assert PG_DSN is not None
    show = "SELECT current_setting('default_transaction_isolation'), current_setting('plan_cache_mode')"
    expected = [("read committed", "force_custom_plan")]

    async def on_the_loop() -> list[tuple[Any, ...]]:
        db = await postgres_connections.connect_async(PG_DSN, schema, name="veilgate-test", unavailable="down")
        try:
            return await db.rows(show)
        finally:
            db.close()

    assert asyncio.run(on_the_loop()) == expected
    blocking = postgres_connections.connect(PG_DSN, schema, name="veilgate-test", unavailable="down")
    try:
        assert blocking.execute(show).fetchall() == expected
    finally:
        blocking.close()
    pool = postgres_connections.Pool(PG_DSN, schema, name="veilgate-test", unavailable="down")
    try:
        with pool.transaction() as db:
            assert db.execute(show).fetchall() == expected
    finally:
        pool.close()
