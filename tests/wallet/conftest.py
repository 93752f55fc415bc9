"""A node wallet on a fresh data directory, trusting the session's real mints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.wallets import open_wallet

from routstr_node.demo.mint import LocalMint
from wallet.service import WalletService


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
async def node(
    data_dir: Path, mint: LocalMint, fee_mint: LocalMint
) -> AsyncIterator[WalletService]:
    """The wallet, opened (recovery ran), trusting the fee-less mint first, then the fee mint."""
    async with open_wallet(data_dir, [mint.url, fee_mint.url]) as service:
        yield service
