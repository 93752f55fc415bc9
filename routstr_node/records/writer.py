"""Records and access-log lines written in batches by one background task.

A request hands its record over with a list append: no await, no lock, no disk on
its path. The task writes what gathered every FLUSH_EVERY_S (sooner when a batch is
full) in one transaction on the store's own thread. A record lost in a crash before
its batch was written is rebuilt from the ledger at the next start (see rebuild.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import TextIO

from routstr_node.records.model import UsageRecord
from routstr_node.records.store import UsageStore

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.5
FULL_BATCH = 2000


class AccessLog:
    """One JSON line per request, appended to a file (``-``: standard output)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._file: TextIO | None = None

    def write(self, lines: list[str]) -> None:
        """Runs off the event loop (the store's thread)."""
        if self._file is None:
            if self.target == "-":
                self._file = sys.stdout
            else:
                path = Path(self.target)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a", encoding="utf-8")
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


class RecordWriter:
    def __init__(self, store: UsageStore | None, access_log: AccessLog | None) -> None:
        self._store = store
        self._access_log = access_log
        self._records: list[UsageRecord] = []
        self._lines: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failed = False  # a batch was lost this run: the next start checks the ledger

    @property
    def keeps_records(self) -> bool:
        return self._store is not None

    @property
    def logs_access(self) -> bool:
        return self._access_log is not None

    def add(self, record: UsageRecord) -> None:
        if self._store is None:
            return
        self._records.append(record)
        if len(self._records) >= FULL_BATCH:
            self._wake.set()

    def log_line(self, line: str) -> None:
        if self._access_log is None:
            return
        self._lines.append(line)
        if len(self._lines) >= FULL_BATCH:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-records")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        records, self._records = self._records, []
        lines, self._lines = self._lines, []
        if records and self._store is not None:
            try:
                await self._store.add(records)
            except Exception as exc:
                self.failed = True
                log.warning("%d usage records not written: %s", len(records), exc)
        if lines and self._access_log is not None:
            try:
                await asyncio.to_thread(self._access_log.write, lines)
            except OSError as exc:
                log.warning("%d access log lines not written: %s", len(lines), exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._access_log is not None:
            self._access_log.close()
