"""Fixtures of the Nostr tests: one real relay for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.relay import RunningRelay, run_relay


@pytest.fixture(scope="session")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningRelay]:
    """``nostr-relay`` on a free loopback port with its own sqlite file (no signature checks)."""
    async with run_relay(tmp_path_factory.mktemp("nostr-relay")) as running:
        yield running
