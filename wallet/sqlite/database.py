"""One SQLite file in WAL mode: one writer connection with group commit, one reader.

A write is a plain function over a ``sqlite3.Connection``. Writes queued while the
event loop runs one step are committed together, each in its own SAVEPOINT, so one
failing write rolls back alone and every caller learns its result only after the
commit. A lone write on a quiet node commits at once, in its caller's step.
Batches run on the event loop's thread: a paid request's reservation or
settlement is tens of microseconds of SQL, and handing batches to a thread was
measured to cost more than that (thread hops, and the GIL passed back and forth
while the thread works: ~20 % of the node's CPU per request under load).

Nothing on the loop's thread waits for a lock or a disk: the writer never waits for
another process's write lock there (busy_timeout 0; a batch that finds the database
locked goes to the connection's thread, which waits), and WAL checkpoints (the only
fsyncs with synchronous=NORMAL) run on that thread too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from wallet.sqlite.schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]

_MAX_BATCH = 256
_CHECKPOINT_EVERY = 500  # batches between WAL checkpoints, run on the writer's thread
_QUIET_S = 0.0005  # a writer idle this long is on a quiet node: commit a lone write at once
_PATIENT_MS = 10_000  # how long a batch on the writer's thread waits for another's lock
# page cache per connection: a write touches a handful of pages (an account, the right
# edges of the journal and reservations); SQLite's default 2 MiB a connection only filled
# with old journal pages (measured: 3 MB of the node's RSS after load)
_PAGE_CACHE_KIB = 512


class _WriterBusy(Exception):
    """Another connection holds the write lock: nothing of the batch ran."""


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` in the connection's own thread, in one hop.

    aiosqlite's public API costs one thread hop per statement; a transaction as one
    function costs one. ``_execute`` is the queue every public method uses.
    """
    result: T = await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call]
    return result


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # checkpoints (the only fsyncs in WAL mode with synchronous=NORMAL) are run by the
    # writer on its own thread, never inside a commit on the event loop's thread
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")


class Database:
    """The wallet's database handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[WriteFn, asyncio.Future[Any]]] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._last_commit = 0.0  # monotonic time the writer last finished a batch
        self._commits = 0
        self._writer_busy = False  # a batch or a checkpoint is under way (maybe off the loop)

    async def open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private(self.path)
        # migrations on a connection of their own: what they leave in a connection's caches
        # (compiled statements, pages of rebuilt tables) is freed with it, not carried for
        # the node's life (measured: 150 kB, 0.4 MB of RSS)
        migrating = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await _in_thread(migrating, _configure)
            await _in_thread(migrating, migrate)
        finally:
            await migrating.close()
        # used from the loop's thread too: only by the writer task, one batch at a time
        self._writer = await aiosqlite.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        await _in_thread(self._writer, _configure)
        await _in_thread(self._writer, _set_busy_timeout, 0)  # see _WriterBusy
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await _in_thread(self._reader, _configure)
        self._writer_task = asyncio.create_task(self._write_loop(), name="wallet-db-writer")

    async def close(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def commits(self) -> int:
        """Batches committed since the database was opened (one or more writes each)."""
        return self._commits

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; returns after it is committed.

        On a quiet node (the writer idle, nothing queued, no commit in the last
        ``_QUIET_S``) the write commits at once, in the caller's own step: there is
        nothing to gather it with, and the hops to the writer task and back were half
        of a lone reservation's time.
        """
        if self._may_commit_at_once():
            assert self._writer is not None
            try:
                outcome = _run_alone(self._writer._conn, fn)
            except _WriterBusy:
                pass  # another process holds the lock: the writer task waits for it
            else:
                self._committed()
                ok, value = outcome
                if ok:
                    return value  # type: ignore[no-any-return]
                raise value
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, future))
        return await future

    def _may_commit_at_once(self) -> bool:
        return (
            not self._writer_busy
            and self._writer_task is not None
            and self._queue.empty()
            and (self._commits + 1) % _CHECKPOINT_EVERY != 0  # that one is the writer's
            and time.monotonic() - self._last_commit > _QUIET_S
        )

    def _committed(self) -> None:
        self._last_commit = time.monotonic()
        self._commits += 1

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("database is closed")
        return await _in_thread(reader, _read_snapshot, fn)

    async def _write_loop(self) -> None:
        writer = self._writer
        assert writer is not None
        while True:
            batch = [await self._queue.get()]
            self._writer_busy = True
            try:
                await self._commit_batch(writer, batch)
            finally:
                self._writer_busy = False

    async def _commit_batch(
        self, writer: aiosqlite.Connection, batch: list[tuple[WriteFn, asyncio.Future[Any]]]
    ) -> None:
        if not self._queue.empty() or time.monotonic() - self._last_commit <= _QUIET_S:
            await asyncio.sleep(0)  # a busy node: writes made in this loop step join
        while len(batch) < _MAX_BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        live = [(fn, fut) for fn, fut in batch if not fut.cancelled()]
        fns = [fn for fn, _ in live]
        try:
            try:
                outcomes = _run_batch(writer._conn, fns)
            except _WriterBusy:
                outcomes = await _in_thread(writer, _run_batch_patiently, fns)
        except Exception as exc:  # the commit itself failed: nothing in the batch happened
            self._last_commit = time.monotonic()
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._committed()
        for (_, fut), (ok, value) in zip(live, outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self._commits % _CHECKPOINT_EVERY == 0:
            try:
                await _in_thread(writer, _checkpoint)
            except sqlite3.Error as exc:  # the WAL only grows until the next one
                log.warning("WAL checkpoint failed: %s", exc)


def _private(path: Path) -> None:
    """The database holds spendable ecash (proofs with their secrets): readable and
    writable by the node's own user only. SQLite gives the -wal and -shm files it
    creates the main file's mode; files made before this rule are tightened too."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.exists() and file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except OSError as exc:
            log.warning("cannot make %s private to the node's user: %s", file.name, exc.strerror)


def _set_busy_timeout(conn: sqlite3.Connection, ms: int) -> None:
    conn.execute(f"PRAGMA busy_timeout={int(ms)}")


def _run_batch_patiently(conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
    """A batch that waits for another connection's write lock (on the writer's thread)."""
    _set_busy_timeout(conn, _PATIENT_MS)
    try:
        return _run_batch(conn, fns)
    finally:
        _set_busy_timeout(conn, 0)


def _begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise _WriterBusy from exc
        raise


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _read_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


def _run_batch(conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
    if len(fns) == 1:
        return [_run_alone(conn, fns[0])]
    outcomes: list[tuple[bool, Any]] = []
    _begin(conn)
    try:
        for fn in fns:
            conn.execute("SAVEPOINT w")
            try:
                value = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE w")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _run_alone(conn: sqlite3.Connection, fn: WriteFn) -> tuple[bool, Any]:
    """A batch of one needs no savepoint: its failure rolls the transaction back."""
    _begin(conn)
    try:
        value = fn(conn)
    except BaseException as exc:
        conn.execute("ROLLBACK")
        return False, exc
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True, value
