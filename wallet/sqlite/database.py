"""One SQLite file in WAL mode: one writer thread with group commit, one reader.

A write is a plain function over a ``sqlite3.Connection``. The event loop only hands it
to the writer's own thread and awaits its result: no SQL, no lock wait and no fsync
ever runs on the loop's thread, so a slow disk or another process's write lock never
stalls the requests in flight. The writer takes every write queued while it worked and
commits them together, each in its own SAVEPOINT, so one failing write rolls back
alone, and every caller learns its result only after the commit. A batch's results go
back to the loop in one hop (``call_soon_threadsafe``), so under load the hand-over
costs one wake-up per batch, not per write.

Earlier the batches ran on the loop's thread, because a thread per aiosqlite
statement cost more than the SQL; one dedicated thread that runs a whole batch as one
function does not: measured with ``scripts/bench_proxy.py`` the node serves as many
requests per second as before at c=64, and the loop's thread is free of the ~21 % of
its time the batches took (py-spy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
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
_PATIENT_MS = 10_000  # how long a batch waits for another process's write lock
# page cache per connection: a write touches a handful of pages (an account, the right
# edges of the journal and reservations); SQLite's default 2 MiB a connection only filled
# with old journal pages (measured: 3 MB of the node's RSS after load)
_PAGE_CACHE_KIB = 512


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
    # writer between batches, at a count it chooses, not inside whichever commit fills the WAL
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={_PATIENT_MS}")
    conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")


class _Write:
    """One queued write: the writer claims it, or its caller drops it when cancelled first."""

    __slots__ = ("claimed", "dropped", "fn", "future")

    def __init__(self, fn: WriteFn, future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future
        self.claimed = False
        self.dropped = False


_STOP = object()  # queued by close(): the writer finishes what came before, then ends


class Database:
    """The wallet's database handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: aiosqlite.Connection | None = None
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._claims = threading.Lock()  # a write is either claimed or dropped, never both
        self._thread: threading.Thread | None = None
        self._commits = 0

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
        writer = await asyncio.to_thread(_connect_writer, self.path)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await _in_thread(self._reader, _configure)
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer, loop), name="wallet-db-writer", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
            await asyncio.sleep(0)  # the last batch's results are delivered
        if self._reader is not None:
            await self._reader.close()
        self._reader = None

    @property
    def commits(self) -> int:
        """Batches committed since the database was opened (one or more writes each)."""
        return self._commits

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction on the writer's thread; returns once committed.

        A caller cancelled before the writer took its write drops it: it never runs. One
        cancelled after that still gets the outcome (a reservation made must be known to
        be released), and the cancellation is delivered at its next await.
        """
        if self._thread is None:
            raise RuntimeError("database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        write = _Write(fn, future)
        self._queue.put(write)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with self._claims:
                write.dropped = not write.claimed
            if write.dropped:
                raise
        while True:  # the writer has it: wait for the commit whatever else happens
            try:
                value = await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
                task.cancel()
            return value

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("database is closed")
        return await _in_thread(reader, _read_snapshot, fn)

    def _write_loop(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """The writer's thread: take what is queued, commit it as one batch, hand back."""
        try:
            stopping = False
            while not stopping:
                batch: list[_Write] = []
                item = self._queue.get()
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    assert isinstance(item, _Write)
                    batch.append(item)
                    if len(batch) >= _MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                live = self._claim(batch)
                if live:
                    self._commit_batch(conn, live, loop)
        finally:
            conn.close()

    def _claim(self, batch: list[_Write]) -> list[_Write]:
        with self._claims:
            live = [w for w in batch if not w.dropped]
            for w in live:
                w.claimed = True
        return live

    def _commit_batch(
        self, conn: sqlite3.Connection, live: list[_Write], loop: asyncio.AbstractEventLoop
    ) -> None:
        try:
            outcomes = _run_batch(conn, [w.fn for w in live])
        except Exception as exc:  # the commit itself failed: nothing in the batch happened
            outcomes = [(False, exc)] * len(live)
        else:
            self._commits += 1
            if self._commits % _CHECKPOINT_EVERY == 0:
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the WAL only grows until the next one
                    log.warning("WAL checkpoint failed: %s", exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these
            loop.call_soon_threadsafe(_deliver, live, outcomes)


def _deliver(live: list[_Write], outcomes: list[tuple[bool, Any]]) -> None:
    for write, (ok, value) in zip(live, outcomes, strict=True):
        if write.future.done():
            continue
        if ok:
            write.future.set_result(value)
        else:
            write.future.set_exception(value)


def _connect_writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _configure(conn)
    return conn


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


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout for another process's lock


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
