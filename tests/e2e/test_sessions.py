"""Chat sessions (CONTRACT §11) through the official OpenAI SDK: what the upstream
received, in order, turn after turn; the answers and every stream event name the
session; sessions are their account's; X-Cashu payers have none; the oldest turns go
past `max_messages`; a session expires after `ttl_hours`; with sessions off,
`session_id` is dropped."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from support.accounts import bearer
from support.e2e import Answer, SdkFactory, assert_error, chat_body, get, post
from support.ecash import EcashFactory
from support.node import MODEL, RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

SESSIONS_TOML = "[sessions]\nenabled = true\nttl_hours = 1\nmax_messages = 4\n"
SYSTEM = {"role": "system", "content": "be brief"}


@pytest.fixture
async def sessions_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    async with run_node(
        tmp_path / "node", [mint.url], upstream.url, extra_toml=SESSIONS_TOML
    ) as node:
        yield node


async def _account(node: RunningNode, ecash: EcashFactory, mint: LocalMint) -> str:
    created = await post(
        f"{node.base_url}/wallet/create",
        {"cashu_token": await ecash.token(3000, mint_url=mint.url)},
    )
    assert created.status == 201, created.raw
    key: str = created.body["api_key"]
    return key


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _echo(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"Echo: {text}"}


def _forwarded(upstream: RunningUpstream) -> dict[str, Any]:
    body: dict[str, Any] = upstream.behaviour.requests[-1].json
    return body


async def test_a_session_through_the_sdk_puts_the_stored_turns_in_order(
    sessions_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    node = sessions_node
    key = await _account(node, ecash, mint)
    client = openai_sdk(node, api_key=key)

    # no session_id: a new session is made and named in the answer
    first = await client.chat.completions.create(
        model=MODEL, messages=[SYSTEM, _user("one")], max_tokens=20
    )
    session_id = (first.model_extra or {})["session_id"]
    assert isinstance(session_id, str) and session_id
    assert first.choices[0].message.content == "Echo: one"
    sent = _forwarded(upstream)
    assert sent["messages"] == [SYSTEM, _user("one")]
    assert "session_id" not in sent

    # the next turn: the request's system messages, the stored turns, then its own
    system2 = {"role": "system", "content": "be kind"}
    second = await client.chat.completions.create(
        model=MODEL,
        messages=[system2, _user("two")],
        max_tokens=20,
        extra_body={"session_id": session_id},
    )
    assert (second.model_extra or {})["session_id"] == session_id
    sent = _forwarded(upstream)
    assert sent["messages"] == [system2, _user("one"), _echo("one"), _user("two")]
    assert "session_id" not in sent
    # the stored history is paid as input: the upstream counted it
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens

    # a stream: every event names the session; the answer is kept as it streamed
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[_user("three")],
        max_tokens=20,
        stream=True,
        extra_body={"session_id": session_id},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all((c.model_extra or {}).get("session_id") == session_id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: three"
    sent = _forwarded(upstream)
    assert sent["messages"] == [
        _user("one"),
        _echo("one"),
        _user("two"),
        _echo("two"),
        _user("three"),
    ]

    # max_messages = 4: the oldest turn went
    auth = bearer(key)
    listed = await get(f"{node.base_url}/sessions", auth)
    assert listed.status == 200, listed.raw
    [summary] = listed.body["data"]
    assert summary["id"] == session_id and summary["messages"] == 4
    assert summary["title"] == "one"
    assert summary["created"] <= summary["updated"]
    shown = await get(f"{node.base_url}/sessions/{session_id}", auth)
    assert shown.body == {
        "id": session_id,
        "messages": [_user("two"), _echo("two"), _user("three"), _echo("three")],
    }

    # another account sees nothing of it, and its own session of that id is its own
    other = await _account(node, ecash, mint)
    assert_error(
        await get(f"{node.base_url}/sessions/{session_id}", bearer(other)), 404, "not_found"
    )
    other_client = openai_sdk(node, api_key=other)
    await other_client.chat.completions.create(
        model=MODEL,
        messages=[_user("mine")],
        max_tokens=20,
        extra_body={"session_id": session_id},
    )
    assert _forwarded(upstream)["messages"] == [_user("mine")]
    assert (await get(f"{node.base_url}/sessions/{session_id}", auth)).body["messages"][
        -1
    ] == _echo("three")

    # an unknown id starts a session under that id
    named = await client.chat.completions.create(
        model=MODEL, messages=[_user("hello")], max_tokens=20, extra_body={"session_id": "my-id"}
    )
    assert (named.model_extra or {})["session_id"] == "my-id"
    assert _forwarded(upstream)["messages"] == [_user("hello")]
    listed_ids = {s["id"] for s in (await get(f"{node.base_url}/sessions", auth)).body["data"]}
    assert listed_ids == {session_id, "my-id"}

    # deleting: only by its account
    delete_other = await _delete(node, "my-id", bearer(other))
    assert_error(delete_other, 404, "not_found")
    deleted = await _delete(node, "my-id", auth)
    assert deleted.status == 200, deleted.raw
    assert_error(await get(f"{node.base_url}/sessions/my-id", auth), 404, "not_found")


async def _delete(node: RunningNode, session_id: str, headers: dict[str, str]) -> Answer:
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{node.base_url}/sessions/{session_id}", headers=headers) as resp,
    ):
        raw = await resp.read()
        body = await resp.json() if raw else None
        return Answer(resp.status, CIMultiDict(resp.headers), body, raw)


async def test_x_cashu_payers_have_no_sessions_and_keep_their_token(
    sessions_node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    node = sessions_node
    token = await ecash.token(300, mint_url=mint.url)
    refused = await post(
        f"{node.base_url}/chat/completions",
        chat_body("hi", session_id="s-1"),
        {"X-Cashu": token},
    )
    assert_error(refused, 400, "session_requires_account")
    assert not await ecash.is_spent(token)
    assert upstream.behaviour.requests == []

    served = await post(f"{node.base_url}/chat/completions", chat_body("hi"), {"X-Cashu": token})
    assert served.status == 200, served.raw
    assert "session_id" not in served.body
    assert "session_id" not in _forwarded(upstream)


async def test_a_session_expires_after_ttl_hours(
    sessions_node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    node = sessions_node
    auth = bearer(await _account(node, ecash, mint))
    chat = f"{node.base_url}/chat/completions"
    first = await post(chat, chat_body("before", session_id="old"), auth)
    assert first.status == 200 and first.body["session_id"] == "old"
    # two hours pass for this session (ttl_hours = 1)
    with closing(sqlite3.connect(node.data_dir / "sessions.sqlite3")) as conn, conn:
        conn.execute("UPDATE sessions SET updated = ?", (int(time.time()) - 7200,))
    assert_error(await get(f"{node.base_url}/sessions/old", auth), 404, "not_found")
    assert (await get(f"{node.base_url}/sessions", auth)).body["data"] == []
    again = await post(chat, chat_body("after", session_id="old"), auth)
    assert again.status == 200, again.raw
    assert _forwarded(upstream)["messages"] == [_user("after")]
    shown = await get(f"{node.base_url}/sessions/old", auth)
    assert shown.body["messages"] == [_user("after"), _echo("after")]


async def test_with_sessions_off_session_id_is_dropped(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = bearer(await _account(node, ecash, mint))
    answer = await post(
        f"{node.base_url}/chat/completions", chat_body("hi", session_id="ignored"), auth
    )
    assert answer.status == 200, answer.raw
    assert "session_id" not in answer.body
    assert "session_id" not in _forwarded(upstream)
    assert_error(await get(f"{node.base_url}/sessions", auth), 404, "not_found")
