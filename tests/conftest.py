"""Shared fixtures: real local mints, nutshell-made ecash, and a fake AI provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.ecash import EcashFactory
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint, run_local_mint
from routstr_node.demo.upstream import RunningUpstream, run_upstream

FEE_MINT_INPUT_FEE_PPK = 100


@pytest.fixture(scope="session")
async def mint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalMint]:
    """A FakeWallet mint without input fees, shared by the whole session."""
    async with run_local_mint(tmp_path_factory.mktemp("mint"), input_fee_ppk=0) as running:
        yield running


@pytest.fixture(scope="session")
async def fee_mint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalMint]:
    """A second mint charging 100 ppk input fees (fees live in the mint's database)."""
    directory = tmp_path_factory.mktemp("fee-mint")
    async with run_local_mint(directory, input_fee_ppk=FEE_MINT_INPUT_FEE_PPK) as running:
        yield running


@pytest.fixture(scope="session")
async def ecash(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EcashFactory]:
    """Tokens minted and checked by nutshell's own wallet, one wallet per mint."""
    factory = EcashFactory(tmp_path_factory.mktemp("nutshell-wallets"))
    yield factory
    await factory.close()


@pytest.fixture(scope="session")
async def _upstream_server() -> AsyncIterator[RunningUpstream]:
    async with run_upstream() as running:
        yield running


@pytest.fixture
async def upstream(_upstream_server: RunningUpstream) -> RunningUpstream:
    """The fake provider, well-behaved and with no recorded requests at each test start."""
    _upstream_server.behaviour.reset()
    return _upstream_server


@pytest.fixture
async def node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    """A fresh node (own data dir) trusting the session's mint, in front of the fake upstream."""
    async with run_node(tmp_path / "node", [mint.url], upstream.url) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for talking to a node."""
    async with aiohttp.ClientSession() as session:
        yield session
