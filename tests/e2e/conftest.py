"""Fixtures of the end-to-end tests: official SDK clients that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from support.e2e import SdkFactory, new_sdk_client
from support.media import media_toml
from support.mint_proxy import MintProxy, mint_proxy
from support.node import RunningNode, run_node
from support.routing import Providers, refused_url, routing_toml

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream, run_upstream


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
async def _provider_servers() -> AsyncIterator[Providers]:
    async with run_upstream() as a, run_upstream() as b, run_upstream() as c:
        yield Providers(a, b, c)


@pytest.fixture
async def providers(_provider_servers: Providers) -> Providers:
    """Three fake providers (a, b, c), well-behaved and with no requests at each test start."""
    _provider_servers.reset()
    return _provider_servers


@pytest.fixture
async def routing_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, providers: Providers
) -> AsyncIterator[RunningNode]:
    """A fresh node selling `routed` and `chain` through the three providers: for tests
    that change what the node measures (failures, speed)."""
    extra = routing_toml(providers, refused_url())
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


@pytest.fixture(scope="module")
async def shared_routing_node(
    tmp_path_factory: pytest.TempPathFactory,
    mint: LocalMint,
    _upstream_server: RunningUpstream,
    _provider_servers: Providers,
) -> AsyncIterator[RunningNode]:
    """One such node for a module's tests in which no provider fails."""
    directory = tmp_path_factory.mktemp("routing-node")
    extra = routing_toml(_provider_servers, refused_url())
    async with run_node(directory, [mint.url], _upstream_server.url, extra_toml=extra) as node:
        yield node


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


@pytest.fixture(scope="module")
async def media_node(
    tmp_path_factory: pytest.TempPathFactory,
    mint: LocalMint,
    _upstream_server: RunningUpstream,
    _provider_servers: Providers,
) -> AsyncIterator[RunningNode]:
    """A node selling the media models (support.media) through the session's fake
    upstream ("fake") and provider a ("jobs"), one per test module: a test resets the
    providers with the ``upstream`` and ``providers`` fixtures and changes no setting."""
    directory = tmp_path_factory.mktemp("media-node")
    extra = media_toml(_provider_servers.a)
    async with run_node(directory, [mint.url], _upstream_server.url, extra_toml=extra) as node:
        yield node
