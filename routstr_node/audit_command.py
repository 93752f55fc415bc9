"""``routstr-node audit``: the custody invariant, read beside running node processes (the
SQLite file in WAL mode, or the PostgreSQL database they share)."""

from __future__ import annotations

from typing import Any

from mints.directory import MintDirectory
from routstr_node.config import Settings
from wallet import DB_FILE, WalletService


class NoLedger(Exception):
    """There is no wallet database in data_dir: nothing to audit."""


async def run_audit(settings: Settings) -> dict[str, Any]:
    url = settings.database.url
    if not url and not (settings.node.data_dir / DB_FILE).exists():
        raise NoLedger(f"no wallet database in {settings.node.data_dir}")
    mints = MintDirectory(list(settings.mints.trusted), timeout_s=settings.mints.timeout_s)
    wallet = WalletService(settings.node.data_dir, mints, url)
    try:
        await wallet.open(recover=False)
        report = await wallet.audit()
        return report.to_dict()
    finally:
        await wallet.close()
        await mints.close()
