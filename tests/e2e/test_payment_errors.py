"""Refusals and failures, end to end (CONTRACT §3 402, §4 errors, rate limits, upstream).

A token the node refuses before redeeming it stays unspent (checked at the mint by
nutshell); after an upstream failure nothing is charged and X-Cashu comes back whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import openai
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from support.e2e import (
    RATE_LIMIT_HEADERS,
    Answer,
    assert_balanced,
    assert_error,
    chat_body,
    chat_text,
    get,
    parse_sse,
    post,
    reservation_of,
    reservations,
    rewrite_token,
    run_node_with_timeout,
    stream_post,
    token_account,
    total_reserved_msat,
)
from support.ecash import EcashFactory
from support.node import RunningNode, _free_port, run_node

from mints.token import encode_token, parse_token
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RETRY_AFTER_S, RunningUpstream

PROMPT = "hello there friend"


def chat_url(node: RunningNode) -> str:
    return f"{node.url}/v1/chat/completions"


def payment_request(answer: Answer) -> PaymentRequest:
    creq = answer.headers["X-Cashu"]
    assert creq.startswith("creqA"), creq
    return PaymentRequest.deserialize(creq)


def assert_counted(answer: Answer) -> None:
    for name in RATE_LIMIT_HEADERS:
        assert int(answer.headers[name]) >= 0, (name, answer.headers)


# -- 402 ---------------------------------------------------------------------------------


async def test_no_payment_gets_402_with_a_payable_nut18_request(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    body = chat_body(PROMPT, max_tokens=20)
    first = await post(chat_url(node), body)
    assert_error(first, 402, "payment_required", "insufficient_quota")
    assert_counted(first)
    request = payment_request(first)
    assert request.u == "sat"
    assert request.m == [mint.url.rstrip("/")]
    # the most this request can cost: prompt bound (body bytes) × input + max_tokens × output
    assert request.a == math.ceil(reservation_of(body, 20) / 1000)
    assert request.a is not None and request.a >= 1

    second = await post(chat_url(node), body)
    assert_error(second, 402, "payment_required", "insufficient_quota")
    assert payment_request(second).a == request.a

    # a token worth exactly what was asked pays for that request
    token = await ecash.token(request.a, mint_url=mint.url)
    paid = await post(chat_url(node), body, {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    assert await ecash.is_spent(token)

    # without max_tokens the model's max_output_tokens (50) bounds the output
    default = chat_body(PROMPT)
    answer = await post(chat_url(node), default)
    assert payment_request(answer).a == math.ceil(reservation_of(default, 50) / 1000)
    # embeddings produce no output: only the prompt bound counts
    embedding = b'{"model": "test-model", "input": "one two three"}'
    answer = await post(f"{node.url}/v1/embeddings", embedding)
    assert_error(answer, 402, "payment_required", "insufficient_quota")
    assert payment_request(answer).a == len(embedding)  # 1 sat per byte-bounded token


async def test_the_402_amount_pays_at_a_mint_that_charges_input_fees(
    tmp_path: Path, fee_mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    body = chat_body(PROMPT, max_tokens=20)
    async with run_node(tmp_path / "node", [fee_mint.url], upstream.url) as node:
        needed = math.ceil(reservation_of(body, 20) / 1000)
        for _ in range(50):  # the node learns the mint's fee at start, in the background
            asked = payment_request(await post(chat_url(node), body))
            if asked.a != needed:
                break
            await asyncio.sleep(0.1)
        assert asked.a is not None and asked.a > needed  # the mint's fee is asked for too
        token = await ecash.token(asked.a, mint_url=fee_mint.url)
        paid = await post(chat_url(node), body, {"X-Cashu": token})
        assert paid.status == 200, paid.raw  # first time, no second 402
        await assert_balanced(node)


async def test_too_small_x_cashu_token_gets_402_and_stays_unspent(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    body = chat_body(PROMPT, max_tokens=20)
    token = await ecash.token(2, mint_url=mint.url)
    answer = await post(chat_url(node), body, {"X-Cashu": token})
    assert_error(answer, 402, "payment_required", "insufficient_quota")
    request = payment_request(answer)
    assert request.a == math.ceil(reservation_of(body, 20) / 1000)
    assert request.u == "sat"
    assert not await ecash.is_spent(token)
    assert token_account(node, token) is None
    assert await ecash.redeem(token) == 2  # still whole


async def test_token_as_key_too_small_stays_unspent_and_a_short_account_gets_402(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    big, small = chat_body(PROMPT, max_tokens=20), chat_body(PROMPT, max_tokens=5)
    assert reservation_of(small, 5) < 120_000 < reservation_of(big, 20)
    token = await ecash.token(120, mint_url=mint.url)
    key = {"Authorization": f"Bearer {token}"}
    # first use: a token that cannot pay this request is refused before it is redeemed
    refused = await post(chat_url(node), big, key)
    assert_error(refused, 402, "payment_required", "insufficient_quota")
    assert payment_request(refused).a == math.ceil(reservation_of(big, 20) / 1000)
    assert not await ecash.is_spent(token)
    assert token_account(node, token) is None
    # a request it can pay redeems it; what is left is the token's account
    paid = await post(chat_url(node), small, key)
    assert paid.status == 200, paid.raw
    assert await ecash.is_spent(token)
    left = 120_000 - int(paid.headers["X-Routstr-Cost-Msats"])
    # later, too little left: 402 insufficient_balance, asking for the whole request (a
    # NUT-24 client pays it as X-Cashu, which pays for that request alone)
    short = await post(chat_url(node), big, key)
    assert_error(short, 402, "insufficient_balance", "insufficient_quota")
    assert payment_request(short).a == math.ceil(reservation_of(big, 20) / 1000)
    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (left, 0)
    answer = await post(
        chat_url(node),
        big,
        {"X-Cashu": await ecash.token(payment_request(short).a or 0, mint_url=mint.url)},
    )
    assert answer.status == 200, answer.raw
    await assert_balanced(node)


# -- 400 / 401 / 404 / 413 ------------------------------------------------------------------


async def test_invalid_token_is_refused_and_stays_unspent(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    broken = token[:-12]
    for headers in ({"X-Cashu": broken}, {"Authorization": f"Bearer {broken}"}):
        answer = await post(chat_url(node), chat_body(PROMPT), headers)
        assert_error(answer, 400, "cashu_token_invalid", "invalid_request_error")
    answer = await post(chat_url(node), chat_body(PROMPT), {"X-Cashu": "cashuBnotatoken"})
    assert_error(answer, 400, "cashu_token_invalid", "invalid_request_error")
    assert not await ecash.is_spent(token)


async def test_token_of_an_untrusted_mint_is_refused_and_stays_unspent(
    node: RunningNode, ecash: EcashFactory, fee_mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=fee_mint.url)
    for headers in ({"X-Cashu": token}, {"Authorization": f"Bearer {token}"}):
        answer = await post(chat_url(node), chat_body(PROMPT), headers)
        assert_error(answer, 400, "cashu_mint_untrusted", "invalid_request_error")
    assert not await ecash.is_spent(token)
    assert token_account(node, token) is None


async def test_token_in_another_unit_is_refused_and_stays_unspent(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    usd = rewrite_token(token, unit="usd")
    for headers in ({"X-Cashu": usd}, {"Authorization": f"Bearer {usd}"}):
        answer = await post(chat_url(node), chat_body(PROMPT), headers)
        assert_error(answer, 400, "cashu_unit_unsupported", "invalid_request_error")
    assert not await ecash.is_spent(token)


async def test_token_of_an_unreachable_trusted_mint_is_503(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # trusted, but nothing listens there
    token = await ecash.token(300, mint_url=mint.url)
    moved = rewrite_token(token, mint_url=dead)
    async with run_node(tmp_path / "node", [mint.url, dead], upstream.url) as node:
        answer = await post(chat_url(node), chat_body(PROMPT), {"X-Cashu": moved})
        assert_error(answer, 503, "cashu_mint_unreachable", "api_error")
        assert upstream.requests == []
    assert not await ecash.is_spent(token)


async def test_spent_token_is_refused(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    assert await ecash.redeem(token) == 300  # spent elsewhere
    for headers in ({"X-Cashu": token}, {"Authorization": f"Bearer {token}"}):
        answer = await post(chat_url(node), chat_body(PROMPT), headers)
        assert_error(answer, 400, "cashu_token_spent", "invalid_request_error")
    await assert_balanced(node)


async def test_a_token_that_paid_as_x_cashu_is_not_a_key_afterwards(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    paid = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    change = paid.headers["X-Cashu"]
    as_key = await post(chat_url(node), chat_body(PROMPT), {"Authorization": f"Bearer {token}"})
    assert_error(as_key, 400, "cashu_token_spent", "invalid_request_error")
    # sent again (as a client does whose answer was lost): spent, and where its change is
    again = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": token})
    assert_error(again, 400, "cashu_token_spent", "invalid_request_error")
    assert "/v1/wallet/refund" in again.body["error"]["message"]
    # the change stays what the answer said
    refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert refund.body["cashu_token"] == change
    await assert_balanced(node)


GENERATOR = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_secrets_alone_open_nothing(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """The mint learns a token's secrets when it is spent (so does anyone who saw the swap);
    only the token itself, signatures and all, opens its account or claims its change."""
    as_key = await ecash.token(300, mint_url=mint.url)
    paid = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), bearer(as_key))
    assert paid.status == 200, paid.raw
    as_x_cashu = await ecash.token(300, mint_url=mint.url)
    paid = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": as_x_cashu})
    assert paid.status == 200, paid.raw

    def forged(token: str) -> str:
        proofs = [replace(p, C=GENERATOR) for p in parse_token(token).proofs]
        return encode_token(mint.url, proofs)

    for headers in (bearer(forged(as_key)), {"X-Cashu": forged(as_x_cashu)}):
        answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), headers)
        assert answer.status == 400, answer.raw  # spent, not an account
    info = await get(f"{node.url}/v1/balance/info", bearer(forged(as_key)))
    assert_error(info, 400, "cashu_token_spent", "invalid_request_error")
    withdraw = await post(f"{node.url}/v1/balance/refund", b"", bearer(forged(as_key)))
    assert_error(withdraw, 401, "invalid_api_key", "authentication_error")
    for path in ("/v1/wallet/refund", "/v1/balance/refund"):
        refund = await post(f"{node.url}{path}", b"", {"X-Cashu": forged(as_x_cashu)})
        assert_error(refund, 404, "not_found", "not_found_error")
    # the tokens themselves still do
    assert (await get(f"{node.url}/v1/balance/info", bearer(as_key))).status == 200
    refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": as_x_cashu})
    assert refund.status == 200 and refund.body["amount"] > 0
    await assert_balanced(node)


async def test_unknown_sk_key_is_401(node: RunningNode) -> None:
    for headers in ({"Authorization": "Bearer sk-garbage"}, {"X-API-Key": "sk-garbage"}):
        answer = await post(chat_url(node), chat_body(PROMPT), headers)
        assert_error(answer, 401, "invalid_api_key", "authentication_error")


async def test_invalid_requests_are_refused_before_any_payment(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    pay = {"X-Cashu": token}
    cases: list[tuple[str, bytes, int, str, str]] = [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json", "invalid_request_error"),
        ("/v1/chat/completions", b"[1, 2]", 400, "invalid_json", "invalid_request_error"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi"}]}',
            400,
            "model_required",
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "test-model"}',
            400,
            "messages_required",
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "test-model", "messages": "hi"}',
            400,
            "messages_required",
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}',
            404,
            "model_not_available",
            "not_found_error",
        ),
        (
            "/v1/embeddings",
            b'{"model": "no-such-model", "input": "hi"}',
            404,
            "model_not_available",
            "not_found_error",
        ),
    ]
    # a stream the node and the upstream could read differently ("true", 1, a list)
    for path, field in (
        ("/v1/chat/completions", '"messages": [{"role": "user", "content": "hi"}]'),
        ("/v1/completions", '"prompt": "hi"'),
        ("/v1/responses", '"input": "hi"'),
    ):
        for stream in ('"true"', "1", "[null]", '"false"'):
            body = f'{{"model": "test-model", {field}, "stream": {stream}}}'.encode()
            cases.append((path, body, 400, "invalid_stream", "invalid_request_error"))
    for path, body, status, code, type_ in cases:
        answer = await post(f"{node.url}{path}", body, pay)
        assert_error(answer, status, code, type_)
        assert_counted(answer)
    assert not await ecash.is_spent(token)
    assert reservations(node) == []


async def test_unreadable_bodies_and_wrong_methods_get_the_envelope(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint, caplog: pytest.LogCaptureFixture
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    too_deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON, nested deeper than Python goes
    answer = await post(chat_url(node), too_deep, {"X-Cashu": token})
    assert_error(answer, 400, "invalid_json", "invalid_request_error")
    not_gzip = {"X-Cashu": token, "Content-Encoding": "gzip"}
    answer = await post(chat_url(node), chat_body(PROMPT), not_gzip)
    assert_error(answer, 400, "invalid_body", "invalid_request_error")
    assert answer.headers["Connection"] == "close"  # the body's rest cannot be read past
    answer = await get(chat_url(node))
    assert_error(answer, 405, "method_not_allowed", "invalid_request_error")
    assert answer.headers["Allow"] == "POST"
    assert not await ecash.is_spent(token)
    assert reservations(node) == []
    # answered: no traceback in the node's log for the body it could not decode
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

    # a header line over the limit is refused by aiohttp itself; its bytes (a token's)
    # never reach the log
    huge = "cashuB" + "x" * 70_000
    answer = await post(chat_url(node), chat_body(PROMPT), {"X-Cashu": huge})
    assert answer.status == 400
    assert "cashuBxxx" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_token_of_many_proofs_pays_in_a_header(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(200, mint_url=mint.url, legacy=True, split=[1] * 72 + [128])
    assert len(token) > 16_000  # twice aiohttp's default limit for one header
    answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": token})
    assert answer.status == 200, answer.raw
    cost = int(answer.headers["X-Routstr-Cost-Msats"])
    assert await ecash.redeem(answer.headers["X-Cashu"]) == (200_000 - cost) // 1000
    await assert_balanced(node)


async def test_what_the_upstream_refuses_comes_back_with_its_param_and_costs_nothing(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    completions = f"{node.url}/v1/completions"
    empty = await post(completions, b'{"model": "test-model", "prompt": "", "max_tokens": 5}')
    assert_error(empty, 402, "payment_required")  # an empty prompt is a request, as at OpenAI
    token = await ecash.token(300, mint_url=mint.url)
    refused = await post(completions, b'{"model": "test-model", "prompt": 5}', {"X-Cashu": token})
    assert_error(refused, 400, "missing_required_parameter", "invalid_request_error")
    assert refused.body["error"]["param"] == "prompt"
    assert len(upstream.requests) == 1
    assert await ecash.redeem(refused.headers["X-Cashu"]) == 300
    await assert_balanced(node)


async def test_body_over_the_limit_is_413(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    extra = "[limits]\nmax_body_bytes = 2000\n"
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        small = await post(chat_url(node), chat_body(PROMPT))
        assert_error(small, 402, "payment_required")  # under the limit: read, then 402
        big = chat_body("word " * 500)
        assert len(big) > 2000
        answer = await post(chat_url(node), big, {"X-Cashu": token})
        assert_error(answer, 413, "body_too_large", "invalid_request_error")
        assert_counted(answer)
    assert not await ecash.is_spent(token)
    assert upstream.requests == []


# -- headers and rate limits ----------------------------------------------------------------


async def test_request_id_and_rate_limit_headers(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    paid = await post(chat_url(node), chat_body(PROMPT), {"Authorization": f"Bearer {token}"})
    assert paid.status == 200, paid.raw
    status, headers, events, raw = await stream_post(
        chat_url(node), chat_body(PROMPT, stream=True), {"Authorization": f"Bearer {token}"}
    )
    assert status == 200, raw
    assert events[-1].data == "[DONE]"
    stream = Answer(status, headers, None, raw)
    unpaid = await post(chat_url(node), chat_body(PROMPT))
    models = await get(f"{node.url}/v1/models")
    missing = await get(f"{node.url}/v1/no-such-route")
    assert_error(missing, 404, "not_found")
    for answer in (paid, stream, unpaid, models, missing):
        assert answer.headers.get("X-Request-Id"), answer.headers
        assert_counted(answer)
    ids = {a.headers["X-Request-Id"] for a in (paid, stream, unpaid, models, missing)}
    assert len(ids) == 5

    for path in ("/health", "/metrics"):
        answer = await get(f"{node.url}{path}")
        assert answer.status == 200
        assert answer.headers.get("X-Request-Id")
        for name in RATE_LIMIT_HEADERS:
            assert name not in answer.headers, (path, answer.headers)


async def _away_from_a_minute_boundary() -> None:
    """Fixed one-minute windows: start well inside one so four requests share it."""
    second = time.time() % 60
    if second > 50:
        await asyncio.sleep(60.5 - second)


async def test_rate_limit_refuses_the_fourth_request_with_retry_after(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    extra = "[limits]\nrequests_per_minute = 3\n"
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        token = await ecash.token(200, mint_url=mint.url)
        await _away_from_a_minute_boundary()
        # per client address on unpaid routes: this creation is the address's first
        created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
        assert created.status == 201, created.raw
        key = {"Authorization": f"Bearer {created.body['api_key']}"}
        # a paid request counts against its payer, also the first one of a key the node
        # has not seen since it started
        first_use = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), key)
        assert first_use.status == 200, first_use.raw
        assert first_use.headers["X-RateLimit-Remaining"] == "2"
        answers = [await get(f"{node.url}/v1/models") for _ in range(3)]
        assert [a.status for a in answers[:2]] == [200, 200]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers[:2]] == ["1", "0"]
        assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
        refused = answers[2]
        assert_error(refused, 429, "rate_limited", "rate_limit_error")
        assert int(refused.headers["Retry-After"]) >= 1
        assert_counted(refused)
        health = await get(f"{node.url}/health")
        assert health.status == 200  # not counted

        # per payer on paid routes: the account is not held back by this address
        paid = [await post(chat_url(node), chat_body(PROMPT, max_tokens=5), key) for _ in range(3)]
        assert [a.status for a in paid[:2]] == [200, 200], paid[0].raw
        assert [a.headers["X-RateLimit-Remaining"] for a in paid[:2]] == ["1", "0"]
        assert_error(paid[2], 429, "rate_limited", "rate_limit_error")
        assert int(paid[2].headers["Retry-After"]) >= 1
        # made-up keys are not payers: a new one per request is no fresh allowance
        for made_up in ({"Authorization": "Bearer sk-garbage"}, {"X-API-Key": "sk-other"}):
            answer = await post(chat_url(node), chat_body(PROMPT), made_up)
            assert_error(answer, 429, "rate_limited", "rate_limit_error")
        # tokens are payers of their own: X-Cashu pays while the address is held back
        fresh = await ecash.token(200, mint_url=mint.url)
        answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": fresh})
        assert answer.status == 200, answer.raw
        # but made-up tokens, each a fresh "payer", are no fresh allowance: once an address's
        # tokens were refused three times, the tokens it sends next wait
        made_up = [{"X-Cashu": f"cashuB{n}notatoken"} for n in range(4)]
        answers = [await post(chat_url(node), chat_body(PROMPT), h) for h in made_up]
        for refused in answers[:3]:
            assert_error(refused, 400, "cashu_token_invalid", "invalid_request_error")
        assert_error(answers[3], 429, "rate_limited", "rate_limit_error")
        fresh = await ecash.token(200, mint_url=mint.url)
        answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": fresh})
        assert_error(answer, 429, "rate_limited", "rate_limit_error")
        assert not await ecash.is_spent(fresh)

    # nor are requests refused before their made-up token is even read
    async with run_node(tmp_path / "other", [mint.url], upstream.url, extra_toml=extra) as node:
        await _away_from_a_minute_boundary()
        bodies = [b"{", b'{"model": "no-such-model", "messages": []}', b"{"]
        for n, body in enumerate(bodies):
            refused = await post(chat_url(node), body, {"Authorization": f"Bearer cashuB{n}x"})
            assert refused.status in (400, 404), refused.raw
        held = await post(chat_url(node), b"{", {"Authorization": "Bearer cashuB9x"})
        assert_error(held, 429, "rate_limited", "rate_limit_error")

    # a real token's own mistakes cost only itself: the address's other tokens still pay
    async with run_node(tmp_path / "third", [mint.url], upstream.url, extra_toml=extra) as node:
        await _away_from_a_minute_boundary()
        as_key = {"Authorization": f"Bearer {await ecash.token(200, mint_url=mint.url)}"}
        typo = b'{"model": "test-modle", "messages": [{"role": "user", "content": "hi"}]}'
        for _ in range(3):
            assert (await post(chat_url(node), typo, as_key)).status == 404
        fresh = await ecash.token(200, mint_url=mint.url)
        answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=5), {"X-Cashu": fresh})
        assert answer.status == 200, answer.raw


# -- upstream failures ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_500_is_502_and_nothing_is_charged(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    stream: bool,
) -> None:
    upstream.behaviour.fail_status = 500
    token = await ecash.token(300, mint_url=mint.url)
    answer = await post(chat_url(node), chat_body(PROMPT, stream=stream), {"X-Cashu": token})
    assert_error(answer, 502, "upstream_error", "upstream_error")
    assert len(upstream.requests) == 1
    assert await ecash.is_spent(token)
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 300  # the whole value back
    ((_, state, charged),) = reservations(node)
    assert (state, charged) == ("released", 0)
    await assert_balanced(node)


@pytest.mark.parametrize(
    ("upstream_status", "status", "type_", "code"),
    [
        (400, 400, "invalid_request_error", "upstream_rejected"),
        (404, 404, "not_found_error", "model_not_found"),
        (422, 400, "invalid_request_error", "upstream_rejected"),
    ],
)
async def test_an_upstream_refusal_is_the_clients_in_the_contracts_terms_and_free(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    upstream_status: int,
    status: int,
    type_: str,
    code: str,
) -> None:
    upstream.behaviour.fail_status = upstream_status
    token = await ecash.token(300, mint_url=mint.url)
    answer = await post(chat_url(node), chat_body(PROMPT), {"X-Cashu": token})
    assert_error(answer, status, code, type_)
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 300  # the whole value back
    ((_, state, charged),) = reservations(node)
    assert (state, charged) == ("released", 0)
    await assert_balanced(node)


async def test_the_sdk_does_not_retry_with_an_x_cashu_token_already_redeemed(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.fail_status = 500
    token = await ecash.token(300, mint_url=mint.url)
    client = openai.AsyncOpenAI(  # the SDK's default: two retries on a 5xx
        base_url=node.base_url, api_key="unused", default_headers={"X-Cashu": token}
    )
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": PROMPT}], max_tokens=5
            )
    finally:
        await client.close()
    assert len(upstream.requests) == 1  # not retried with the spent token
    assert caught.value.status_code == 502
    change = caught.value.response.headers["X-Cashu"]
    assert await ecash.redeem(change) == 300  # the whole value, in the answer the SDK kept
    await assert_balanced(node)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_429_keeps_its_retry_after_and_nothing_is_charged(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    stream: bool,
) -> None:
    upstream.behaviour.fail_status = 429
    token = await ecash.token(300, mint_url=mint.url)
    key = {"Authorization": f"Bearer {token}"}
    answer = await post(chat_url(node), chat_body(PROMPT, stream=stream), key)
    assert_error(answer, 429, "rate_limited", "rate_limit_error")
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_S)
    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (300_000, 0)
    await assert_balanced(node)


async def test_upstream_timeout_is_504_and_nothing_is_charged(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    upstream.behaviour.delay_s = 2.0
    pay_token = await ecash.token(300, mint_url=mint.url)
    key_token = await ecash.token(300, mint_url=mint.url)
    async with run_node_with_timeout(
        tmp_path / "node", [mint.url], upstream.url, upstream_timeout_s=0.5
    ) as node:
        answer = await post(chat_url(node), chat_body(PROMPT), {"X-Cashu": pay_token})
        assert_error(answer, 504, "upstream_timeout", "upstream_error")
        assert await ecash.redeem(answer.headers["X-Cashu"]) == 300

        streamed = await post(
            chat_url(node),
            chat_body(PROMPT, stream=True),
            {"Authorization": f"Bearer {key_token}"},
        )
        assert_error(streamed, 504, "upstream_timeout", "upstream_error")
        account = token_account(node, key_token)
        assert account is not None
        assert (account.balance_msat, account.reserved_msat) == (300_000, 0)
        assert [(r[1], r[2]) for r in reservations(node)] == [("released", 0)] * 2
        await assert_balanced(node)


async def test_stream_cut_before_any_output_is_an_error_and_free(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.cut_after_chunks = 0
    token = await ecash.token(300, mint_url=mint.url)
    answer = await post(chat_url(node), chat_body(PROMPT, stream=True), {"X-Cashu": token})
    assert_error(answer, 502, "upstream_error", "upstream_error")
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 300
    ((_, state, charged),) = reservations(node)
    assert (state, charged) == ("released", 0)
    await assert_balanced(node)


async def test_stream_cut_midway_delivers_what_came_and_charges_within_the_reservation(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.cut_after_chunks = 3  # role chunk, "Echo:", " hello", then cut
    token = await ecash.token(500, mint_url=mint.url)
    status, _, events, raw = await stream_post(
        chat_url(node), chat_body(PROMPT, stream=True), {"Authorization": f"Bearer {token}"}
    )
    assert status == 200, raw
    assert chat_text(events) == "Echo: hello"
    usage_events = [
        e.json for e in events if e.data != "[DONE]" and (e.json.get("usage") or {}).get("cost")
    ]
    assert len(usage_events) == 1
    assert usage_events[0]["choices"] == []
    # the break is told in an error event; the usage event still ends the stream
    assert [e.data for e in events[-2:]][1] == "[DONE]"
    assert events[-2].json == usage_events[0]
    assert events[-3].json["error"]["code"] == "upstream_error"
    cost = usage_events[0]["usage"]["cost"]["total_msats"]
    ((reserved, state, charged),) = reservations(node)
    assert state == "charged"
    assert charged == cost
    assert 0 < cost <= reserved
    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (500_000 - cost, 0)
    assert total_reserved_msat(node) == 0
    await assert_balanced(node)


async def test_a_stream_cut_midway_tells_the_sdk_its_change_in_the_error(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.cut_after_chunks = 3  # role chunk, "Echo:", " hello", then cut
    token = await ecash.token(500, mint_url=mint.url)
    client = openai.AsyncOpenAI(
        base_url=node.base_url, api_key="unused", default_headers={"X-Cashu": token}
    )
    text = ""
    try:
        stream = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
    finally:
        await client.close()
    assert text == "Echo: hello"
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_error"
    ((_, state, charged),) = reservations(node)
    assert state == "charged" and charged > 0
    # what was delivered is paid; the rest of the token comes back in the error itself
    assert await ecash.redeem(body["cashu_change"]) == (500_000 - charged) // 1000
    await assert_balanced(node)


@pytest.mark.parametrize(
    ("path", "body", "cut_after"),
    [
        ("/v1/chat/completions", chat_body(PROMPT, stream=True), 1),  # after the role chunk
        (
            "/v1/responses",
            b'{"model": "test-model", "input": "hello there friend", "stream": true}',
            4,  # after response.created, in_progress, output_item.added, content_part.added
        ),
    ],
    ids=["chat", "responses"],
)
async def test_stream_cut_before_any_output_text_is_free(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    path: str,
    body: bytes,
    cut_after: int,
) -> None:
    upstream.behaviour.cut_after_chunks = cut_after
    token = await ecash.token(300, mint_url=mint.url)
    answer = await post(f"{node.url}{path}", body, {"X-Cashu": token})
    if answer.status == 200:  # the stream had begun: its last data event carries the change
        events = [e for e in parse_sse(answer.raw) if e.data != "[DONE]"]
        assert chat_text(events) == ""
        changes = [e.json["cashu_change"] for e in events if "cashu_change" in e.json]
        assert len(changes) == 1, answer.raw
        change = changes[0]
    else:
        assert_error(answer, 502, "upstream_error", "upstream_error")
        change = answer.headers["X-Cashu"]
    ((_, _, charged),) = reservations(node)
    assert charged == 0
    assert await ecash.redeem(change) == 300
    await assert_balanced(node)


async def test_absurd_max_tokens_is_refused_with_an_error_envelope(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    key = {"Authorization": f"Bearer {token}"}
    huge = 10**16  # × 2000 msat per output token: beyond any int64 amount of msat
    answer = await post(chat_url(node), chat_body(PROMPT, max_tokens=huge), key)
    assert answer.status in (400, 402), (answer.status, answer.raw[:300])
    account = token_account(node, token)
    if answer.status == 402:  # redeemed, then found short: the balance stays whole
        assert_error(answer, 402, "insufficient_balance", "insufficient_quota")
        assert account is not None
        assert (account.balance_msat, account.reserved_msat) == (300_000, 0)
    else:  # refused before any payment: the token is left alone
        assert_error(answer, 400, answer.body["error"]["code"], "invalid_request_error")
        assert account is None
        assert not await ecash.is_spent(token)
    await assert_balanced(node)
