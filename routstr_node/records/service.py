"""The node's usage records and access log: opened with the node, fed by its middleware.

``request_done`` runs for every request once its answer is out: a paid one hands its
record to the writer; with the access log on, every one hands a JSON line. Neither
waits for a disk. Old records are removed by a background job (``[logs]
retention_days``); at start, records lost in a crash are rebuilt from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from routstr_node.config import Settings
from routstr_node.paid_call import PAID_CALL
from routstr_node.records.postgres_store import PostgresUsageStore
from routstr_node.records.rebuild import rebuild_lost_records
from routstr_node.records.sqlite_store import USAGE_FILE, SqliteUsageStore
from routstr_node.records.store import UsageStore
from routstr_node.records.writer import AccessLog, RecordWriter
from routstr_node.state import NODE, REQUEST_ID

log = logging.getLogger(__name__)

REMOVE_OLD_EVERY_S = 3600.0
_DAY_S = 86400


def usage_store_for(settings: Settings) -> UsageStore:
    """PostgreSQL when ``[database] url`` names it (shared by the node's processes),
    else a SQLite file in data_dir."""
    return usage_store_at(settings.node.data_dir, settings.database.url)


def usage_store_at(data_dir: Path, database_url: str) -> UsageStore:
    if database_url:
        return PostgresUsageStore(database_url)
    return SqliteUsageStore(data_dir / USAGE_FILE)


class UsageRecords:
    def __init__(self, settings: Settings, current: Callable[[], Settings]) -> None:
        logs = settings.logs
        self.store = usage_store_for(settings)
        self.shared = bool(settings.database.url)  # other processes write there too
        self._current = current  # retention_days may change in the admin panel
        self.writer = RecordWriter(
            self.store if logs.usage_records else None,
            AccessLog(logs.access_log) if logs.access_log else None,
        )

    def request_done(self, request: web.Request, status: int, created: int, started: float) -> None:
        """Called once per request, its answer sent (``started``: perf_counter())."""
        writer = self.writer
        call = request.get(PAID_CALL)
        if call is None and not writer.logs_access:
            return
        ended = time.perf_counter()
        record = (
            call.usage_record(status, created, started, ended)
            if call is not None and writer.keeps_records
            else None
        )
        if record is not None:
            writer.add(record)
        if writer.logs_access:
            resource = request.match_info.route.resource
            line = {
                "time": created,
                "request_id": request.get(REQUEST_ID),
                "method": request.method,
                # the route's pattern, never the path as sent: a path may carry anything
                "route": resource.canonical if resource is not None else "unmatched",
                "status": status,
                "latency_ms": int((ended - started) * 1000),
                "model": call.model_id if call is not None else None,
                "provider": call.provider if call is not None else None,
                "cost_msats": (call.charged.total_msat if call is not None and call.charged else 0),
            }
            writer.log_line(json.dumps(line, separators=(",", ":")))

    @property
    def retention_days(self) -> int:
        return self._current().logs.retention_days

    async def remove_old(self) -> int:
        return await self.store.remove_older_than(int(time.time()) - self.retention_days * _DAY_S)


RECORDS = web.AppKey("records", UsageRecords)


async def records_context(app: web.Application) -> AsyncIterator[None]:
    """Open the store, rebuild what a crash lost, write while the node runs; at a clean
    stop with every call settled and written, mark the ledger checked up to here."""
    node = app[NODE]
    records = UsageRecords(node.settings, lambda: node.settings)
    await records.store.open()
    remover: asyncio.Task[None] | None = None
    try:
        if records.writer.keeps_records:
            await rebuild_lost_records(
                records.store, node.wallet.ledger, records.retention_days, shared=records.shared
            )
            await records.remove_old()
        records.writer.start()
        app[RECORDS] = records
        remover = asyncio.create_task(_remove_old_now_and_then(records), name="old-records")
        yield
    finally:
        if remover is not None:
            remover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await remover
        await records.writer.close()
        # another process's records may still be in its batches: only a lone node moves
        # the mark at its stop (a shared store's moves at start, past old charges only)
        clean = not records.writer.failed and node.unsettled.none and not records.shared
        if records.writer.keeps_records and clean:
            try:
                await records.store.set_checked_through(
                    await node.wallet.ledger.last_reservation_id()
                )
            except Exception as exc:  # the next start checks from the last mark: no loss
                log.warning("usage records: checked mark not moved: %s", type(exc).__name__)
        await records.store.close()


async def _remove_old_now_and_then(records: UsageRecords) -> None:
    while True:
        await asyncio.sleep(REMOVE_OLD_EVERY_S)
        try:
            removed = await records.remove_old()
        except Exception as exc:
            log.warning("old usage records not removed now: %s", type(exc).__name__)
            continue
        if removed:
            log.info("%d usage records older than %d days removed", removed, records.retention_days)
