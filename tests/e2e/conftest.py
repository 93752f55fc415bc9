"""Fixtures of the end-to-end tests: official SDK clients that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from support.e2e import SdkFactory, new_sdk_client
from support.mint_proxy import MintProxy, mint_proxy
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint


@pytest.fixture
async def openai_sdk() -> AsyncIterator[SdkFactory]:
    """Make SDK clients on a node (see ``new_sdk_client``); all are closed at the end."""
    clients: list[openai.AsyncOpenAI] = []

    def make(
        node: RunningNode, *, api_key: str = "unused", x_cashu: str | None = None
    ) -> openai.AsyncOpenAI:
        client = new_sdk_client(node, api_key=api_key, x_cashu=x_cashu)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(scope="session")
async def _session_proxy(mint: LocalMint) -> AsyncIterator[MintProxy]:
    async with mint_proxy(mint.url) as running:
        yield running


@pytest.fixture
async def proxy(_session_proxy: MintProxy) -> AsyncIterator[MintProxy]:
    """The session's fault proxy in front of the session's mint, without faults at the
    start of each test. Tokens name it as their mint (the node trusts only it)."""
    await _session_proxy.accept()
    _session_proxy.clear()
    _session_proxy.delivered.clear()
    _session_proxy.arrived.clear()
    yield _session_proxy
    _session_proxy.clear()
    await _session_proxy.accept()
