"""The wallet database's write path: writes on the writer's thread, bursts in batches.

Both paths must keep the same promise: a write's result (or its exception) arrives only
after its transaction is committed (or rolled back), and a failing write takes nothing
else down with it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite.database import Database
from wallet.sqlite.schema import MIGRATIONS, migrate


class Refused(Exception):
    pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "wallet.sqlite")
    await database.open()
    await database.write(lambda c: c.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
    yield database
    await database.close()


def _insert(n: int, *, fail: bool = False) -> Callable[[sqlite3.Connection], int]:
    def fn(c: sqlite3.Connection) -> int:
        c.execute("INSERT INTO t (n) VALUES (?)", (n,))
        if fail:
            raise Refused(n)
        return threading.get_ident()

    return fn


async def _stored(db: Database) -> list[int]:
    return await db.read(lambda c: [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")])


async def test_a_write_commits_on_the_writers_thread_never_the_loops(db: Database) -> None:
    thread = await db.write(_insert(1))
    assert thread != threading.get_ident()
    assert await _stored(db) == [1]

    with pytest.raises(Refused):
        await db.write(_insert(2, fail=True))
    assert await _stored(db) == [1]  # rolled back, and the database still takes writes
    await db.write(_insert(3))
    assert await _stored(db) == [1, 3]


async def test_a_burst_is_batched_and_each_failure_rolls_back_alone(db: Database) -> None:
    commits_before = db.commits
    writes = [db.write(_insert(n, fail=n % 7 == 0)) for n in range(1, 101)]
    outcomes = await asyncio.gather(*writes, return_exceptions=True)

    failed = [o.args[0] for o in outcomes if isinstance(o, Refused)]
    assert failed == [n for n in range(1, 101) if n % 7 == 0]
    assert await _stored(db) == [n for n in range(1, 101) if n % 7 != 0]
    assert db.commits - commits_before < 50, "the burst is committed in batches"
    threads = {o for o in outcomes if isinstance(o, int)}
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_loop(db: Database) -> None:
    """Another process's write lock: the batch waits on the writer's thread (the loop
    keeps serving) and commits once the lock is released."""
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        write = asyncio.ensure_future(db.write(_insert(1)))
        ticks = 0
        while ticks < 20:  # the loop runs other work while the write waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await write != threading.get_ident(), "it waited on the writer's thread"
    assert await _stored(db) == [1]


async def test_a_cancelled_caller_learns_the_outcome_of_a_write_the_writer_took(
    db: Database,
) -> None:
    """A write the writer has taken commits whatever its caller does meanwhile: the
    caller gets the result (a reservation made must be known, to be released), and its
    cancellation arrives at its next await. One not yet taken is dropped: it never runs."""
    taken = threading.Event()
    release = threading.Event()

    def slow(c: sqlite3.Connection) -> int:
        taken.set()
        release.wait(5)
        c.execute("INSERT INTO t (n) VALUES (1)")
        return 1

    seen: list[str] = []

    async def caller() -> None:
        value = await db.write(slow)
        seen.append(f"result {value}")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled at the next await")
            raise

    task = asyncio.ensure_future(caller())
    await asyncio.to_thread(taken.wait, 5)
    queued = asyncio.ensure_future(db.write(_insert(2)))  # behind the slow one, not taken
    await asyncio.sleep(0)
    task.cancel()
    queued.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["result 1", "cancelled at the next await"]
    assert queued.cancelled()
    assert await _stored(db) == [1], "the write dropped before it was taken never ran"


async def test_the_wal_is_checkpointed_by_the_writer(db: Database) -> None:
    """Auto-checkpoints are off (they would fsync inside whichever commit fills the WAL);
    the writer's own keep the WAL from growing with every commit."""
    wal = db.path.with_name(db.path.name + "-wal")
    for n in range(1, 3001):
        await db.write(_insert(n))
    page_size = await db.read(lambda c: int(c.execute("PRAGMA page_size").fetchone()[0]))
    # 3,000 commits of at least two pages each without a checkpoint: > 6,000 pages
    assert wal.stat().st_size < 3000 * page_size
    assert len(await _stored(db)) == 3000


async def test_writes_still_queued_at_close_are_committed(tmp_path: Path) -> None:
    database = Database(tmp_path / "close.sqlite")
    await database.open()
    await database.write(lambda c: c.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
    writes = [asyncio.ensure_future(database.write(_insert(n))) for n in range(1, 51)]
    await asyncio.sleep(0)
    await database.close()
    assert all(w.done() and not w.cancelled() for w in writes)
    conn = sqlite3.connect(tmp_path / "close.sqlite")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    conn.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["same step", "next step", "quiet"]), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
async def test_any_mix_of_lone_and_batched_writes_commits_each_once(
    tmp_path: Path, plan: list[tuple[str, bool]]
) -> None:
    """Writes issued together, one loop step apart, or on a quiet node (each a batch
    of its own) in any order: each result arrives after its commit, a failing write takes back only
    itself, and the table ends with exactly the writes that succeeded."""
    database = Database(tmp_path / f"mix-{uuid.uuid4().hex}.sqlite")  # one per example
    await database.open()
    try:
        await database.write(lambda c: c.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)"))

        async def write(n: int, fails: bool) -> None:
            try:
                await database.write(_insert(n, fail=fails))
            except Refused:
                assert fails
                assert n not in await _stored(database)
                return
            assert not fails
            assert n in await _stored(database), "the result came after the commit"

        pending: list[asyncio.Future[None]] = []
        for n, (timing, fails) in enumerate(plan, start=1):
            if timing == "quiet":
                await asyncio.gather(*pending)
                await asyncio.sleep(0.001)
            elif timing == "next step":
                await asyncio.sleep(0)
            pending.append(asyncio.ensure_future(write(n, fails)))
        await asyncio.gather(*pending)
        assert await _stored(database) == [n for n, (_, f) in enumerate(plan, start=1) if not f]
    finally:
        await database.close()


async def test_a_sum_past_int64_is_refused_not_stored_as_a_float(db: Database) -> None:
    """SQLite makes an overflowing integer sum a REAL; the ledger never holds one."""
    account = await db.write(lambda c: ledger_sql.create_account(c, "key", key_hash="overflow"))
    big = ledger_sql.MAX_MSAT  # 2^62: two of them are past 2^63 - 1
    await db.write(lambda c: ledger_sql.credit_from_custody(c, account, big, operation_id=None))
    with pytest.raises(sqlite3.IntegrityError, match="msat amount out of range"):
        await db.write(lambda c: ledger_sql.credit_from_custody(c, account, big, operation_id=None))
    add_earnings = "UPDATE earnings SET amount_msat = amount_msat + ?"
    await db.write(lambda c: c.execute(add_earnings, (big,)))
    with pytest.raises(sqlite3.IntegrityError, match="msat amount out of range"):
        await db.write(lambda c: c.execute(add_earnings, (big,)))
    row = await db.read(
        lambda c: c.execute(
            "SELECT balance_msat, typeof(balance_msat) FROM accounts WHERE id = ?", (account,)
        ).fetchone()
    )
    assert tuple(row) == (big, "integer")


def test_migration_4_names_each_accounts_latest_journal_entry(tmp_path: Path) -> None:
    """A database written before the journal lost its account index: each account gets
    its latest entry from the history already there, and new entries keep it current."""
    conn = sqlite3.connect(tmp_path / "v3.sqlite", isolation_level=None)
    for script in MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    for account_id in (1, 2, 3):
        conn.execute(
            "INSERT INTO accounts (id, kind, created_at) VALUES (?, 'key', 0)", (account_id,)
        )
    for account_id in (1, 2, 1, None, 2, 1):
        conn.execute("INSERT INTO journal (at, kind, account_id) VALUES (0, 'x', ?)", (account_id,))

    migrate(conn)

    def latest() -> list[tuple[int, int | None]]:
        return conn.execute("SELECT id, last_journal_id FROM accounts ORDER BY id").fetchall()

    assert latest() == [(1, 6), (2, 5), (3, None)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(journal)")}
    assert "journal_account" not in indexes
    conn.execute("INSERT INTO journal (at, kind, account_id) VALUES (0, 'x', 3)")
    conn.execute("INSERT INTO journal (at, kind, account_id) VALUES (0, 'x', NULL)")
    assert latest() == [(1, 6), (2, 5), (3, 7)]
    conn.close()


def test_migration_6_keeps_every_proof_and_indexes_what_requests_look_up(
    tmp_path: Path,
) -> None:
    """The proofs table is rebuilt: every row comes through unchanged, y stays unique,
    and an operation's inputs and a token's proofs are found without a scan."""
    conn = sqlite3.connect(tmp_path / "v5.sqlite", isolation_level=None)
    for script in MIGRATIONS[:5]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 5")
    rows = [
        (i + 1, f"http://mint-{i % 2}", "00ad", 2**i, f"s{i}", f"c{i}", f"y{i}", state, op, out, i)
        for i, (state, op, out) in enumerate(
            [("unspent", None, None), ("pending", 7, None), ("spent", 7, None), ("sent", 3, 2)]
        )
    ]
    conn.executemany("INSERT INTO proofs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    migrate(conn)

    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("SELECT * FROM proofs ORDER BY id").fetchall() == rows
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(proofs)")}
    assert {"proofs_unspent", "proofs_pending_by_operation", "proofs_by_outgoing_token"} <= indexes
    with pytest.raises(sqlite3.IntegrityError):  # the same proof twice
        conn.execute(
            "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state, created_at)"
            " VALUES ('m', '00ad', 1, 'another', 'c', 'y0', 'unspent', 0)"
        )
    conn.close()


async def test_the_database_is_private_to_the_nodes_user(tmp_path: Path) -> None:
    """It holds spendable ecash: no other local user may read it, nor its -wal/-shm."""
    data_dir = tmp_path / "data"
    database = Database(data_dir / "wallet.sqlite3")
    await database.open()
    try:
        await database.write(lambda c: c.execute("CREATE TABLE t (x)"))
        files = sorted(data_dir.iterdir())
        assert [f.name for f in files] == [
            "wallet.sqlite3",
            "wallet.sqlite3-shm",
            "wallet.sqlite3-wal",
        ]
        assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
        assert data_dir.stat().st_mode & 0o777 == 0o700
    finally:
        await database.close()

    # a database made before this rule (readable by all) is tightened at the next open
    for file in (data_dir / "wallet.sqlite3", data_dir / "wallet.sqlite3-wal"):
        file.touch()
        file.chmod(0o644)
    again = Database(data_dir / "wallet.sqlite3")
    await again.open()
    try:
        assert {f.stat().st_mode & 0o777 for f in data_dir.iterdir()} == {0o600}
    finally:
        await again.close()
