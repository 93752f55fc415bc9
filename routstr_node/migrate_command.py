"""``routstr-node migrate --to postgresql://…``: a stopped node's SQLite ledger moved into
an empty PostgreSQL database, audited before and after (the same totals, balanced)."""

from __future__ import annotations

from typing import Any

from mints.directory import MintDirectory
from routstr_node.config import Settings
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
    return {"copied": copied, "before": before.to_dict(), "after": after.to_dict()}
