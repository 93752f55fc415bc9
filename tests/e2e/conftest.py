"""Fixtures of the end-to-end tests: official SDK clients that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from support.e2e import SdkFactory, new_sdk_client
from support.node import RunningNode


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
