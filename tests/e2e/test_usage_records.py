"""Usage records (CONTRACT §11): every paid request leaves one, the payer reads its own
history, the operator filters and groups them all, and their totals are the ledger's.

A mixed run pays with an sk- key, a token as the key and X-Cashu, plain and streamed,
with an upstream failure among them; then the history and the admin totals are
checked against the answers' headers and against the ledger's journal, to the msat.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from support.accounts import bearer, funded_auth
from support.e2e import (
    assert_balanced,
    assert_error,
    chat_body,
    get,
    post,
    stream_post,
    until,
    wait_until_settled,
)
from support.ecash import EcashFactory
from support.media import IMAGE, SPEECH, media_toml
from support.node import MODEL, RunningNode, run_node
from support.routing import Providers
from support.wallets import query

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "records admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}
EXTRA = f'[admin]\npassword = "{PASSWORD}"\n[logs]\naccess_log = "ACCESS"\n'


@pytest.fixture
async def records_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    extra = EXTRA.replace("ACCESS", str(tmp_path / "access.log"))
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


async def _admin_requests(node: RunningNode, query_string: str = "") -> list[dict[str, Any]]:
    limit = "" if "limit=" in query_string else "&limit=1000"
    answer = await get(f"{node.url}/admin/api/requests?x=1{limit}{query_string}", ADMIN)
    assert answer.status == 200, answer.raw
    data: list[dict[str, Any]] = answer.body["data"]
    return data


async def _all_recorded(node: RunningNode, count: int) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        found = await _admin_requests(node)
        return found if len(found) >= count else None

    return await until(check)


def _journal_charges_msat(node: RunningNode) -> int:
    rows = query(
        node.data_dir,
        "SELECT COALESCE(SUM(earnings_delta_msat), 0) FROM journal WHERE kind = 'charge'",
    )
    return int(rows[0][0])


def _ledger_earnings_msat(node: RunningNode) -> tuple[int, int]:
    """(earnings, of which sat rounding of X-Cashu change)."""
    total = int(query(node.data_dir, "SELECT amount_msat FROM earnings")[0][0])
    rounding = query(
        node.data_dir,
        "SELECT COALESCE(SUM(earnings_delta_msat), 0) FROM journal WHERE kind != 'charge'",
    )
    return total, int(rounding[0][0])


async def test_mixed_run_history_and_admin_totals_equal_the_ledger(
    records_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    node = records_node
    chat = f"{node.base_url}/chat/completions"
    account_token = await ecash.token(2000, mint_url=mint.url)
    created = await post(f"{node.base_url}/wallet/create", {"cashu_token": account_token})
    sk = bearer(created.body["api_key"])
    token_key = bearer(await ecash.token(1000, mint_url=mint.url))
    answers: list[tuple[str, dict[str, str], int, int]] = []  # (id, payer, status, cost)

    async def plain(headers: dict[str, str], text: str, payer: str) -> None:
        answer = await post(chat, chat_body(text, max_tokens=10), headers)
        cost = int(answer.headers.get("X-Routstr-Cost-Msats", "0"))
        answers.append((answer.headers["X-Request-Id"], {"payer": payer}, answer.status, cost))

    async def streamed(headers: dict[str, str], text: str, payer: str) -> None:
        status, head, events, _ = await stream_post(
            chat, chat_body(text, max_tokens=10, stream=True), headers
        )
        final = [e.json for e in events if e.data != "[DONE]" and "usage" in e.json][-1]
        cost = final["usage"]["cost"]["total_msats"]
        answers.append((head["X-Request-Id"], {"payer": payer}, status, cost))

    await plain(sk, "one from the account", "sk")
    await streamed(sk, "a stream from the account", "sk")
    await plain(token_key, "one with the token as the key", "token")
    await streamed(token_key, "a stream with the token as the key", "token")
    await plain({"X-Cashu": await ecash.token(300, mint_url=mint.url)}, "pay per request", "x")
    await streamed({"X-Cashu": await ecash.token(300, mint_url=mint.url)}, "x stream", "x")
    upstream.behaviour.fail_status = 500
    await plain(sk, "this one fails upstream", "sk")
    upstream.behaviour.fail_status = None
    await plain(sk, "and the last one", "sk")
    await wait_until_settled(node)

    statuses = [a[2] for a in answers]
    assert statuses == [200, 200, 200, 200, 200, 200, 502, 200]
    recorded = await _all_recorded(node, len(answers))
    assert len(recorded) == len(answers)
    by_id = {r["request_id"]: r for r in recorded}
    for request_id, _, status, cost in answers:
        record = by_id[request_id]
        assert record["status"] == status
        assert record["cost_msats"] == cost
        assert record["model"] == MODEL and record["provider"] == "fake"
        assert record["route"] == "/v1/chat/completions"
        assert record["latency_ms"] is not None and record["first_byte_ms"] is not None
        assert record["first_byte_ms"] <= record["latency_ms"]
        if status == 200:
            assert record["input_tokens"] > 0 and record["output_tokens"] > 0
    assert by_id[answers[6][0]]["cost_msats"] == 0
    assert sorted(r["payment"] for r in recorded) == sorted(
        ["account"] * 4 + ["token"] * 2 + ["xcashu"] * 2
    )

    # the payer's history: its own records only, newest first, paged by `before`
    sk_ids = [a[0] for a in answers if a[1]["payer"] == "sk"]
    history = await get(f"{node.base_url}/wallet/history", sk)
    assert history.status == 200, history.raw
    assert [e["request_id"] for e in history.body["data"]] == sk_ids[::-1]
    assert history.body["has_more"] is False
    assert set(history.body["data"][0]) == {
        "request_id",
        "created",
        "route",
        "model",
        "provider",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_msats",
    }
    first = await get(f"{node.base_url}/wallet/history?limit=2", sk)
    assert [e["request_id"] for e in first.body["data"]] == sk_ids[::-1][:2]
    assert first.body["has_more"] is True
    rest = await get(f"{node.base_url}/wallet/history?limit=2&before={sk_ids[-2]}", sk)
    assert [e["request_id"] for e in rest.body["data"]] == sk_ids[::-1][2:4]
    assert rest.body["has_more"] is False
    token_history = await get(f"{node.base_url}/balance/history", token_key)
    token_ids = [a[0] for a in answers if a[1]["payer"] == "token"]
    assert [e["request_id"] for e in token_history.body["data"]] == token_ids[::-1]
    assert all(e["cost"] == e["cost_msats"] for e in token_history.body["data"])
    assert_error(await get(f"{node.base_url}/wallet/history"), 401, "missing_api_key")

    # the totals: the history's, the admin's, and the ledger's are one figure
    charged = sum(a[3] for a in answers)
    history_total = sum(e["cost_msats"] for e in history.body["data"]) + sum(
        e["cost_msats"] for e in token_history.body["data"]
    )
    x_cashu_total = sum(a[3] for a in answers if a[1]["payer"] == "x")
    assert history_total + x_cashu_total == charged
    for group_by in ("day", "model", "provider"):
        usage = await get(f"{node.url}/admin/api/usage?group_by={group_by}", ADMIN)
        assert usage.status == 200, usage.raw
        groups = usage.body["data"]
        assert sum(g["earnings_msat"] for g in groups) == charged
        assert sum(g["requests"] for g in groups) == len(answers)
        assert sum(g["errors"] for g in groups) == 1
        assert all(g["latency_ms_p50"] is not None for g in groups)
    assert _journal_charges_msat(node) == charged
    earnings, rounding = _ledger_earnings_msat(node)
    assert earnings == charged + rounding
    by_model = (await get(f"{node.url}/admin/api/usage?group_by=model", ADMIN)).body["data"]
    assert [g["key"] for g in by_model] == [MODEL]

    # admin filters
    assert len(await _admin_requests(node, "&status=502")) == 1
    assert len(await _admin_requests(node, f"&model={MODEL}&provider=fake")) == len(answers)
    assert await _admin_requests(node, "&model=other") == []
    assert await _admin_requests(node, "&since=2999-01-01") == []
    assert len(await _admin_requests(node, "&until=2999-01-01T00:00:00Z")) == len(answers)
    assert len(await _admin_requests(node, "&limit=3")) == 3
    assert (await get(f"{node.url}/admin/api/requests")).status == 401
    assert_error(
        await get(f"{node.url}/admin/api/usage?group_by=week", ADMIN), 400, "invalid_group_by"
    )
    await assert_balanced(node)

    # no key or token anywhere in the records or the access log
    secrets = [created.body["api_key"], created.body["admin_key"], account_token]
    secrets.append(token_key["Authorization"].removeprefix("Bearer "))
    access = (tmp_path / "access.log").read_text()
    lines = [json.loads(line) for line in access.splitlines()]
    assert {answers[0][0], answers[6][0]} <= {line["request_id"] for line in lines}
    assert {
        "request_id",
        "route",
        "status",
        "latency_ms",
        "model",
        "provider",
        "cost_msats",
    } <= set(lines[-1])
    # the records, the access log, and everything the node logged meanwhile
    dumped = _dump_files(node.data_dir / "usage.sqlite3") + access + caplog.text
    for secret in secrets:
        assert secret not in dumped
        assert secret[-40:] not in dumped
    assert "cashuA" not in dumped and "cashuB" not in dumped and "sk-" not in dumped


def _dump_files(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(conn.iterdump())


async def test_records_off_keeps_none(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    extra = f'[admin]\npassword = "{PASSWORD}"\n[logs]\nusage_records = false\n'
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        headers = {"X-Cashu": await ecash.token(300, mint_url=mint.url)}
        answer = await post(f"{node.base_url}/chat/completions", chat_body("hi"), headers)
        assert answer.status == 200
        await wait_until_settled(node)
        assert await _admin_requests(node) == []


async def test_media_records_count_their_units(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
) -> None:
    extra = media_toml(providers.a) + f'[admin]\npassword = "{PASSWORD}"\n'
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        auth = await funded_auth(node.url, ecash, mint.url, 1000)
        image = await post(
            f"{node.base_url}/images/generations",
            {"model": IMAGE, "prompt": "a lighthouse", "n": 2, "size": "1024x1024"},
            auth,
        )
        assert image.status == 200, image.raw
        speech = await post(
            f"{node.base_url}/audio/speech",
            {"model": SPEECH, "input": "twelve chars", "voice": "alloy"},
            auth,
        )
        assert speech.status == 200, speech.raw
        recorded = {r["route"]: r for r in await _all_recorded(node, 2)}
        pictures = recorded["/v1/images/generations"]
        assert (pictures["units"], pictures["unit"], pictures["model"]) == (2, "image", IMAGE)
        assert pictures["cost_msats"] == int(image.headers["X-Routstr-Cost-Msats"])
        spoken = recorded["/v1/audio/speech"]
        assert (spoken["units"], spoken["unit"]) == (len("twelve chars"), "character")
        assert spoken["cost_msats"] == int(speech.headers["X-Routstr-Cost-Msats"])


async def test_a_key_sent_as_the_request_id_is_not_taken(
    records_node: RunningNode, ecash: EcashFactory, mint: LocalMint, tmp_path: Path
) -> None:
    """Request ids go into records and the access log: a client's own is kept, but not
    when it is a key or a token pasted in the wrong header."""
    auth = await funded_auth(records_node.url, ecash, mint.url, 500)
    key = auth["Authorization"].removeprefix("Bearer ")
    chat = f"{records_node.base_url}/chat/completions"
    own = await post(chat, chat_body("mine"), {**auth, "X-Request-Id": "client-42"})
    assert own.headers["X-Request-Id"] == "client-42"
    pasted = await post(chat, chat_body("oops"), {**auth, "X-Request-Id": key})
    assert pasted.status == 200 and pasted.headers["X-Request-Id"] != key
    recorded = await _all_recorded(records_node, 2)
    assert {r["request_id"] for r in recorded} == {"client-42", pasted.headers["X-Request-Id"]}
    assert key not in (tmp_path / "access.log").read_text()
