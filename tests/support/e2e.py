"""Helpers for the end-to-end tests: a node with a short upstream timeout, clients,
server-sent events, and read-only looks at the node's ledger.

Nothing here changes the node's state: the database is only read (read-only SQLite
connection), every money movement goes through the node's HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import openai
from cashu.core.base import TokenV4
from multidict import CIMultiDict

from mints.token import parse_token
from routstr_node.audit_command import run_audit
from support.node import RunningNode, run_node
from support.wallets import query

T = TypeVar("T")
ENVELOPE_KEYS = {"message", "type", "code", "param"}
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
POLL_TIMEOUT_S = 20.0
SDK_TIMEOUT_S = 30.0  # a hung request fails the test instead of waiting SDK's 600 s

# test-model prices (tests/support/node.py): msat per token
INPUT_MSAT = 1000
OUTPUT_MSAT = 2000
CONTEXT_LENGTH = 4000
MAX_OUTPUT_TOKENS = 50


def cost_of(input_tokens: int, output_tokens: int) -> int:
    """The contract's cost of a test-model request, in msat (no request fee)."""
    return input_tokens * INPUT_MSAT + output_tokens * OUTPUT_MSAT


def reservation_of(body: bytes, max_output: int = MAX_OUTPUT_TOKENS) -> int:
    """What the node holds for a test-model request (prompt bound: body bytes)."""
    return min(len(body), CONTEXT_LENGTH) * INPUT_MSAT + max_output * OUTPUT_MSAT


@asynccontextmanager
async def run_node_with_timeout(
    directory: Path,
    mint_urls: list[str],
    upstream_url: str,
    *,
    upstream_timeout_s: float,
    extra_toml: str = "",
) -> AsyncIterator[RunningNode]:
    """``support.node.run_node`` with the upstream's ``timeout_s`` set."""
    async with run_node(
        directory,
        mint_urls,
        upstream_url,
        extra_toml=extra_toml,
        upstream_timeout_s=upstream_timeout_s,
    ) as running:
        yield running


def rewrite_token(token: str, *, unit: str | None = None, mint_url: str | None = None) -> str:
    """The same proofs (cashuB) claiming another unit or mint: a token a client could send."""
    decoded = TokenV4.deserialize(token)
    if unit is not None:
        decoded.u = unit
    if mint_url is not None:
        decoded.m = mint_url
    rewritten: str = decoded.serialize()
    return rewritten


# -- clients ------------------------------------------------------------------------------


class SdkFactory(Protocol):
    """What the ``openai_sdk`` fixture gives: ``new_sdk_client``, closed at teardown."""

    def __call__(
        self, node: RunningNode, *, api_key: str = ..., x_cashu: str | None = ...
    ) -> openai.AsyncOpenAI: ...


def new_sdk_client(
    node: RunningNode, *, api_key: str = "unused", x_cashu: str | None = None
) -> openai.AsyncOpenAI:
    """The official SDK on the node; no retries (a retry would pay twice).

    Close it (the ``openai_sdk`` fixture does): the node runs in the tests' event loop,
    and an SDK client left to the garbage collector closes its sockets' file descriptors
    in its finalizers, then later unregisters those descriptor numbers from the event
    loop, by then reused by the node's new connections, which then hang.
    """
    headers = {"X-Cashu": x_cashu} if x_cashu else None
    return openai.AsyncOpenAI(
        base_url=node.base_url,
        api_key=api_key,
        max_retries=0,
        default_headers=headers,
        timeout=SDK_TIMEOUT_S,
    )


def chat_body(text: str, *, max_tokens: int | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": "test-model",
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: Any
    raw: bytes


async def post(
    url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> Answer:
    """One POST with a fresh session; the body is sent as given (bytes) or as JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=all_headers) as resp,
    ):
        raw = await resp.read()
        return Answer(resp.status, CIMultiDict(resp.headers), _json_or_none(raw), raw)


async def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        raw = await resp.read()
        return Answer(resp.status, CIMultiDict(resp.headers), _json_or_none(raw), raw)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def assert_error(answer: Answer, status: int, code: str, type_: str | None = None) -> None:
    """The contract's error: status, code, and exactly the four envelope keys."""
    assert answer.status == status, (answer.status, answer.raw[:500])
    assert isinstance(answer.body, dict) and set(answer.body) == {"error"}, answer.raw[:500]
    error = answer.body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    if type_ is not None:
        assert error["type"] == type_, error
    assert answer.headers.get("X-Request-Id"), answer.headers


# -- server-sent events -------------------------------------------------------------------


@dataclass
class Event:
    name: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(raw: bytes) -> list[Event]:
    """Every event of a complete SSE body, in order."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        event = _event(block)
        if event is not None:
            events.append(event)
    return events


def _event(block: bytes) -> Event | None:
    name = None
    data: list[str] = []
    for line in block.decode().split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if not data:
        return None
    return Event(name, "\n".join(data))


async def stream_post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], list[Event], bytes]:
    """A streaming request read to its end: (status, headers, events, raw body)."""
    answer = await post(url, body, headers)
    events = parse_sse(answer.raw) if answer.status == 200 else []
    return answer.status, answer.headers, events, answer.raw


def chat_text(events: list[Event]) -> str:
    """The assistant text of a chat stream's chunks."""
    parts = []
    for event in events:
        if event.data == "[DONE]":
            continue
        obj = event.json
        for choice in obj.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                parts.append(content)
    return "".join(parts)


# -- the ledger, read only ------------------------------------------------------------------


@dataclass(frozen=True)
class AccountState:
    kind: str
    balance_msat: int
    reserved_msat: int


def token_account(node: RunningNode, token: str) -> AccountState | None:
    """The account a token (used as a key, or via X-Cashu) was redeemed into."""
    rows = query(
        node.data_dir,
        "SELECT kind, balance_msat, reserved_msat FROM accounts WHERE token_id = ?",
        (parse_token(token).token_id,),
    )
    return AccountState(*rows[0]) if rows else None


def reservations(node: RunningNode) -> list[tuple[int, str, int | None]]:
    """(amount_msat, state, charged_msat) of every request reservation, oldest first."""
    rows = query(
        node.data_dir,
        "SELECT amount_msat, state, charged_msat FROM reservations"
        " WHERE purpose = 'request' ORDER BY id",
    )
    return [(int(a), str(s), None if c is None else int(c)) for a, s, c in rows]


def total_reserved_msat(node: RunningNode) -> int:
    return int(query(node.data_dir, "SELECT COALESCE(SUM(reserved_msat), 0) FROM accounts")[0][0])


async def until(check: Callable[[], Awaitable[T | None]], timeout_s: float = 30.0) -> T:
    """Poll ``check()`` (bounded) until it returns something: what a node finishes in the
    background, seen from outside."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = await check()
            if result is not None:
                return result
            await asyncio.sleep(0.1)


async def wait_until_settled(node: RunningNode) -> None:
    """Poll (bounded) until no account holds a reservation and none is open."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        open_ = [r for r in reservations(node) if r[1] == "open"]
        if total_reserved_msat(node) == 0 and not open_:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"reservations still open after {POLL_TIMEOUT_S} s: {open_}")
        await asyncio.sleep(0.05)


async def wait_until_no_open_streams(node: RunningNode) -> None:
    """Poll /metrics (bounded) until the node relays no stream: its handlers have finished."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        text = (await get(f"{node.url}/metrics")).raw.decode()
        if "\nroutstr_open_streams 0\n" in text:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"streams still open after {POLL_TIMEOUT_S} s")
        await asyncio.sleep(0.05)


async def assert_balanced(node: RunningNode) -> dict[str, Any]:
    report = await run_audit(node.settings)
    assert report["balanced"], report
    assert report["difference_msat"] == 0, report
    return report
