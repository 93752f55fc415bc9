"""A charged request is never left without its usage record, a crash included (§11).

Records are written in batches after the answers, to a file of their own: a node
killed (SIGKILL) before a batch was written lost it. The charge itself named the
request in the ledger, so the next start rebuilds every missing record. Old records
go after `[logs] retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.accounts import funded_auth
from support.e2e import chat_body, get, post, until
from support.ecash import EcashFactory
from support.node import node_toml
from support.node_process import NodeProcess
from support.postgres import database_url_for, query_postgres, temporary_database, use_database
from support.wallets import query

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "records crash admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
async def node(
    request: pytest.FixtureRequest, tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[NodeProcess]:
    """A node process, its ledger, records and sessions in SQLite files or PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        port = _free_port()
        config = tmp_path / "node.toml"
        extra = f'[admin]\npassword = "{PASSWORD}"\n[logs]\nretention_days = 30\n'
        if request.param == "postgresql":
            url = await stack.enter_async_context(temporary_database())
            extra += f'[database]\nurl = "{url}"\n'
            use_database(tmp_path / "data", url)  # support.wallets.query reads it there
        config.write_text(node_toml(tmp_path / "data", port, [mint.url], upstream.url, extra))
        running = NodeProcess(config, port)
        await running.start()
        try:
            yield running
        finally:
            await running.kill()


def _data(node: NodeProcess) -> Path:
    return node.config.parent / "data"


async def _recorded(node: NodeProcess) -> dict[str, dict[str, Any]]:
    answer = await get(f"{node.url}/admin/api/requests?limit=1000", ADMIN)
    assert answer.status == 200, answer.raw
    return {r["request_id"]: r for r in answer.body["data"]}


def _in_usage_store(node: NodeProcess, sql: str, params: tuple[Any, ...]) -> None:
    """A statement on the usage records, wherever the node keeps them."""
    url = database_url_for(_data(node))
    if url:
        query_postgres(url, sql, params)
        return
    with closing(sqlite3.connect(_data(node) / "usage.sqlite3")) as conn, conn:
        conn.execute(sql, params)


def _charged_by_request(node: NodeProcess) -> dict[str, int]:
    rows = query(
        _data(node),
        "SELECT request_id, charged_msat FROM reservations WHERE state = 'charged'",
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def test_records_lost_to_sigkill_are_rebuilt_at_start(
    node: NodeProcess, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, mint.url, 3000)
    answers = await asyncio.gather(
        *(
            post(f"{node.url}/v1/chat/completions", chat_body(f"question {i}"), auth)
            for i in range(12)
        )
    )
    await node.kill()  # at once: the last batch of records is not written yet
    costs = {a.headers["X-Request-Id"]: int(a.headers["X-Routstr-Cost-Msats"]) for a in answers}
    assert all(a.status == 200 for a in answers)

    await node.start()
    recorded = await _recorded(node)
    assert set(costs) <= set(recorded)
    for request_id, cost in costs.items():
        assert recorded[request_id]["cost_msats"] == cost
        assert recorded[request_id]["model"] == "test-model"
        assert recorded[request_id]["provider"] == "fake"
    assert _charged_by_request(node) == costs
    report = await run_audit(load_settings(node.config))
    assert report["balanced"], report


async def test_killed_mid_stream_the_charge_made_at_start_has_its_record(
    node: NodeProcess, ecash: EcashFactory, mint: LocalMint, upstream: RunningUpstream
) -> None:
    upstream.behaviour.reply_words = 60
    upstream.behaviour.chunk_delay_s = 0.2  # 12 s of answer: killed well before its end
    auth = await funded_auth(node.url, ecash, mint.url, 1000)
    body = chat_body("tell me a long story", max_tokens=50, stream=True)
    received: list[bytes] = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/v1/chat/completions", data=body, headers=auth) as resp,
    ):
        assert resp.status == 200
        request_id = resp.headers["X-Request-Id"]
        async for chunk in resp.content.iter_any():
            received.append(chunk)
            if b"".join(received).count(b"data:") >= 12:  # over two seconds of output
                break
        await node.kill()

    await node.start()
    charged = _charged_by_request(node)
    assert charged[request_id] > 0
    record = (await _recorded(node))[request_id]
    assert record["cost_msats"] == charged[request_id]
    assert record["route"] == "/v1/chat/completions"
    assert record["model"] == "test-model" and record["provider"] == "fake"
    history = await get(f"{node.url}/v1/wallet/history", auth)
    assert [e["request_id"] for e in history.body["data"]] == [request_id]


async def test_retention_removes_old_records(
    node: NodeProcess, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, mint.url, 1000)
    answer = await post(f"{node.url}/v1/chat/completions", chat_body("recent"), auth)
    recent = answer.headers["X-Request-Id"]

    async def written() -> dict[str, dict[str, Any]] | None:
        found = await _recorded(node)
        return found or None

    await until(written)
    await node.stop()
    # what 31 and 29 days ago left behind: records of requests made then
    now = int(time.time())
    for request_id, age_days in (("from-31-days-ago", 31), ("from-29-days-ago", 29)):
        _in_usage_store(
            node,
            "INSERT INTO usage_records (request_id, created, account_id, mode, route,"
            " model, provider, status, latency_ms, first_byte_ms, input_tokens,"
            " output_tokens, units, unit, cost_msat, reservation_id)"
            " SELECT ?, ?, account_id, mode, route, model, provider, status, latency_ms,"
            " first_byte_ms, input_tokens, output_tokens, units, unit, cost_msat, NULL"
            " FROM usage_records WHERE request_id = ?",
            (request_id, now - age_days * 86400, recent),
        )
    await node.start()
    kept = await _recorded(node)
    assert set(kept) == {recent, "from-29-days-ago"}
