"""A node wallet on a fresh data directory, trusting the session's real mints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.postgres import temporary_database, use_database
from support.wallets import open_wallet

from routstr_node.demo.mint import LocalMint
from wallet.service import WalletService


@pytest.fixture(params=["sqlite", "postgresql"])
async def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Path]:
    """The node's data directory; its wallet in SQLite there, or in a PostgreSQL database
    of the test's own: every wallet test runs on both stores."""
    path = tmp_path / "node"
    if request.param == "sqlite":
        yield path
        return
    async with temporary_database() as url:
        use_database(path, url)
        yield path


@pytest.fixture
async def node(
    data_dir: Path, mint: LocalMint, fee_mint: LocalMint
) -> AsyncIterator[WalletService]:
    """The wallet, opened (recovery ran), trusting the fee-less mint first, then the fee mint."""
    async with open_wallet(data_dir, [mint.url, fee_mint.url]) as service:
        yield service
