"""``routstr-node migrate --to postgresql://…``: a stopped node's SQLite ledger moved
into an empty PostgreSQL database; the audit balances before and after, same totals."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from support.ecash import EcashFactory
from support.postgres import temporary_database
from support.wallets import fund, open_wallet

from routstr_node.demo.mint import LocalMint
from wallet.service import WalletService

ROUTSTR_NODE = Path(sys.executable).parent / "routstr-node"


async def _migrate(config: Path, url: str) -> tuple[int, dict[str, Any] | None, str]:
    child = await asyncio.create_subprocess_exec(
        str(ROUTSTR_NODE), "migrate", "--to", url, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    assert child.returncode is not None
    return child.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_a_ledger_moves_whole_and_balances_before_and_after(
    tmp_path: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    data_dir = tmp_path / "node"
    async with open_wallet(data_dir, [mint.url]) as node:
        account = await fund(node, ecash, mint.url, 1000)
        reservation = await node.ledger.reserve(account.account_id, 20_000)
        await node.ledger.settle(reservation, 12_345)
        sent = await node.withdraw_token(account.account_id, 100)
        assert sent.amount_sat == 100
        kept = await node.ledger.account(account.account_id)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{data_dir}"\n[mints]\ntrusted = ["{mint.url}"]\n')

    async with temporary_database() as url:
        code, report, err = await _migrate(config, url)
        assert code == 0, err[-2000:]
        assert report is not None
        before, after = report["before"], report["after"]
        assert before["balanced"] and after["balanced"]
        for total in ("custody_unspent_msat", "balances_msat", "earnings_msat"):
            assert before[total] == after[total]
        assert after["earnings_msat"] == 12_345
        code, again, err = await _migrate(config, url)
        assert code != 0 and again is None
        assert "the database is not empty" in err

        moved = WalletService(data_dir, node.mints, url)
        await moved.open()
        try:
            assert await moved.ledger.account_id_for_key(account.api_key) == account.account_id
            assert await moved.ledger.account(account.account_id) == kept
            again = await moved.withdraw_token(account.account_id, 50)  # custody works there
            assert await ecash.redeem(again.token) == 50
            assert (await moved.audit()).balanced
        finally:
            await moved.close()


async def test_no_ledger_no_move(tmp_path: Path, mint: LocalMint) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "none"}"\n[mints]\ntrusted = ["{mint.url}"]\n'
    )
    async with temporary_database() as url:
        code, report, err = await _migrate(config, url)
    assert code != 0 and report is None
    assert "no wallet database" in err
    assert not (tmp_path / "none").exists()
