"""``routstr-node migrate --to postgresql://…``: a stopped node's SQLite ledger moved into
an empty PostgreSQL database, audited before and after (the same totals, balanced); then
its usage records and chat sessions, which live in files of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mints.directory import MintDirectory
from routstr_node.config import Settings
from routstr_node.records.service import usage_store_at
from routstr_node.records.sqlite_store import USAGE_FILE
from routstr_node.sessions.store import SESSIONS_FILE
from routstr_node.sessions.stores import session_store_for
from wallet import DB_FILE, AuditReport, WalletService, migrate_to_postgres

# what must be the same before and after: every total the audit reads
TOTALS = (
    "custody_unspent_msat",
    "in_flight_msat",
    "balances_msat",
    "reserved_msat",
    "unclaimed_change_msat",
    "earnings_msat",
    "pending_operations",
)


_PAGE = 5000  # records moved per transaction


class MigrationRefused(Exception):
    """The ledger does not balance before, or differs after: a message for the operator."""


async def _audit(settings: Settings, url: str) -> AuditReport:
    mints = MintDirectory(list(settings.mints.trusted), timeout_s=settings.mints.timeout_s)
    wallet = WalletService(settings.node.data_dir, mints, url)
    try:
        await wallet.open(recover=False)
        return await wallet.audit()
    finally:
        await wallet.close()
        await mints.close()


async def run_migrate(settings: Settings, url: str) -> dict[str, Any]:
    if not (settings.node.data_dir / DB_FILE).exists():
        raise MigrationRefused(f"no wallet database in {settings.node.data_dir}")
    before = await _audit(settings, "")
    if not before.balanced:
        raise MigrationRefused(
            "the SQLite ledger does not balance (run routstr-node audit): nothing was moved"
        )
    copied = await migrate_to_postgres(settings.node.data_dir, url)
    after = await _audit(settings, url)
    differ = [k for k in TOTALS if getattr(before, k) != getattr(after, k)]
    if differ or not after.balanced:
        raise MigrationRefused(
            f"the audit after the move differs ({', '.join(differ) or 'not balanced'}):"
            " keep running on SQLite and report this"
        )
    copied["usage_records"] = await _move_records(settings.node.data_dir, url)
    copied["sessions"] = await _move_sessions(settings.node.data_dir, url)
    return {"copied": copied, "before": before.to_dict(), "after": after.to_dict()}


async def _move_records(data_dir: Path, url: str) -> int:
    """The usage records, in the order they were written, and the mark up to which the
    ledger's charges were checked for a lost record. (Were this cut short, the node
    would rebuild the missing ones from the ledger at start: the ledger has moved.)"""
    if not (data_dir / USAGE_FILE).exists():
        return 0
    source, target = usage_store_at(data_dir, ""), usage_store_at(data_dir, url)
    await source.open()
    await target.open()
    try:
        if await target.written_after(0, 1):
            raise MigrationRefused("the usage records of the database are not empty")
        moved, after = 0, 0
        while page := await source.written_after(after, _PAGE):
            await target.add([record for _, record in page])
            moved, after = moved + len(page), page[-1][0]
        await target.set_checked_through(await source.checked_through())
        return moved
    finally:
        await source.close()
        await target.close()


async def _move_sessions(data_dir: Path, url: str) -> int:
    if not (data_dir / SESSIONS_FILE).exists():
        return 0
    source, target = session_store_for(data_dir, ""), session_store_for(data_dir, url)
    await source.open()
    await target.open()
    try:
        if await target.export():
            raise MigrationRefused("the sessions of the database are not empty")
        sessions = await source.export()
        await target.restore(sessions)
        return len(sessions)
    finally:
        await source.close()
        await target.close()
