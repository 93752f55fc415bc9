"""Rate limits across two real ``routstr-node run`` processes on one PostgreSQL database:
a client that alternates between the processes gets its limit once, not once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.accounts import funded_auth
from support.e2e import chat_body, post
from support.ecash import EcashFactory
from support.node import _free_port as free_port
from support.node import node_toml
from support.node_process import NodeProcess
from support.postgres import temporary_database

from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

LIMIT = 5  # per minute, hour and day: a minute rolling over mid-test changes nothing


@pytest.fixture
async def two_limited_nodes(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[tuple[NodeProcess, NodeProcess]]:
    async with temporary_database() as url:
        nodes = []
        for name in ("a", "b"):
            config = tmp_path / f"{name}.toml"
            config.write_text(
                node_toml(
                    tmp_path / f"data-{name}",
                    free_port(),
                    [mint.url],
                    upstream.url,
                    f'[database]\nurl = "{url}"\n[limits]\nrequests_per_minute = {LIMIT}\n'
                    f"requests_per_hour = {LIMIT}\nrequests_per_day = {LIMIT}\n",
                )
            )
            nodes.append(NodeProcess(config, load_settings(config).node.port))
        try:
            for node in nodes:
                await node.start()
            yield nodes[0], nodes[1]
        finally:
            for node in nodes:
                await node.kill()


async def test_limit_holds_across_processes(
    two_limited_nodes: tuple[NodeProcess, NodeProcess],
) -> None:
    """Requests alternated between the processes: LIMIT pass in all, then 429 with
    Retry-After from either process."""
    a, b = two_limited_nodes
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        for i in range(LIMIT + 3):
            node = (a, b)[i % 2]
            async with http.get(node.url + "/v1/models") as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    assert resp.headers["X-RateLimit-Remaining"] == str(LIMIT - 1 - i)
                else:
                    assert resp.status == 429
                    assert int(resp.headers["Retry-After"]) > 0
                    assert resp.headers["X-RateLimit-Remaining"] == "0"
                    assert resp.headers["X-RateLimit-Limit"] == str(LIMIT)
                    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert statuses == [200] * LIMIT + [429] * 3


async def test_a_payer_limit_holds_across_processes(
    two_limited_nodes: tuple[NodeProcess, NodeProcess], ecash: EcashFactory, mint: LocalMint
) -> None:
    """Paid requests of one account alternated between the processes: its own bucket
    (not the address's) fills once across both."""
    a, b = two_limited_nodes
    auth = await funded_auth(a.url, ecash, mint.url, 1000)
    body = chat_body("hello", max_tokens=5)
    statuses = []
    for i in range(LIMIT + 2):
        answer = await post(f"{(a, b)[i % 2].url}/v1/chat/completions", body, auth)
        statuses.append(answer.status)
        if answer.status == 429:
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.body["error"]["code"] == "rate_limited"
    assert statuses == [200] * LIMIT + [429] * 2
