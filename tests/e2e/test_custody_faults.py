"""Custody when a mint answers late, loses an answer, is paused or refuses connections.

The node talks to the real mint through a fault proxy (tests/support/mint_proxy.py):
every request reaches the mint and is carried out there, only its answer is held back,
dropped, or the request itself held. The node's own wait for a mint is 1.5 s here, so an
answer 3 s late is one the node gave up on. After each fault: every client's money is
accounted for to the msat (credited, handed back as change, or still unspent), every
token the node hands out is redeemed in full by an independent wallet (no spent proof
is ever handed out), and the audit balances.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.accounts import balance_of, bearer, funded_auth, listed_withdrawals, settled_balance
from support.e2e import Answer, assert_balanced, assert_error, chat_body, get, post, until
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.mint_proxy import MintProxy
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

MINT_TIMEOUT_S = 1.5
LATE_S = 3.0  # an answer this late is one the node gave up on
SWAP = "POST /v1/swap"
MELT = "POST /v1/melt/bolt11"
MINT = "POST /v1/mint/bolt11"
MELT_STATE = "GET /v1/melt/quote/bolt11/"


@pytest.fixture
async def node(
    tmp_path: Path, proxy: MintProxy, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    async with run_node(
        tmp_path / "node", [proxy.url], upstream.url, mint_timeout_s=MINT_TIMEOUT_S
    ) as running:
        yield running


async def pay_per_request(node: RunningNode, token: str) -> Answer:
    return await post(
        f"{node.url}/v1/chat/completions", chat_body("hello", max_tokens=20), {"X-Cashu": token}
    )


async def assert_paid_with_change(
    answer: Answer, token: str, ecash: EcashFactory, value_sat: int
) -> None:
    """The request was served, and cost + change is the token's whole value (the sub-sat
    rest of the change is earnings), the change redeemed in full elsewhere."""
    assert answer.status == 200, answer.raw[:300]
    cost = int(answer.headers["X-Routstr-Cost-Msats"])
    change = answer.headers["X-Cashu"]
    assert ecash.amount(change) == (value_sat * 1000 - cost) // 1000
    assert await ecash.redeem(change) == ecash.amount(change)
    assert await ecash.is_spent(token)


@contextlib.contextmanager
def paused(mint: LocalMint) -> Any:
    """The mint process stopped (SIGSTOP): requests queue in its socket until it resumes."""
    os.kill(mint.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(mint.process.pid, signal.SIGCONT)


# -- receive: a token paying for one request (X-Cashu) -------------------------------------


async def test_a_redeem_answered_late_is_finished_by_sending_it_again(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(500, mint_url=proxy.url)
    proxy.delay(SWAP, LATE_S)

    answer = await pay_per_request(node, token)

    # the node stopped waiting, sent the identical swap again, and the mint said it had
    # done it: the signatures came back by restore, and the request was served
    await assert_paid_with_change(answer, token, ecash, 500)
    await assert_balanced(node)


async def test_a_redeem_while_the_mint_stays_slow_is_503_then_the_same_token_pays(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(500, mint_url=proxy.url)
    proxy.delay(SWAP, LATE_S, times=2)  # the first swap and the one sent again

    first = await pay_per_request(node, token)

    assert_error(first, 503, "cashu_mint_unreachable", "api_error")
    await proxy.reached(SWAP, 2)  # the mint carried the swap out meanwhile
    assert await ecash.is_spent(token)
    # the same token works at once: its redeem is resolved then and there, no 409
    again = await pay_per_request(node, token)
    await assert_paid_with_change(again, token, ecash, 500)
    await assert_balanced(node)


async def test_a_refused_connection_proves_nothing_happened_and_the_token_works_at_once(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(500, mint_url=proxy.url)
    await pay_per_request(node, await ecash.token(500, mint_url=proxy.url))  # keysets known
    await proxy.refuse()

    down = await pay_per_request(node, token)

    assert_error(down, 503, "cashu_mint_unreachable", "api_error")
    await proxy.accept()
    assert not await ecash.is_spent(token)
    await assert_paid_with_change(await pay_per_request(node, token), token, ecash, 500)
    await assert_balanced(node)


async def test_a_redeem_at_a_paused_mint_is_finished_when_it_resumes(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(500, mint_url=proxy.url)
    await pay_per_request(node, await ecash.token(500, mint_url=proxy.url))  # keysets known

    with paused(mint):
        stalled = await pay_per_request(node, token)
        assert_error(stalled, 503, "cashu_mint_unreachable", "api_error")

    # the queued swaps run as the mint resumes; the same token then pays
    answer = await until(lambda: _served(node, token))
    await assert_paid_with_change(answer, token, ecash, 500)
    await assert_balanced(node)


async def _served(node: RunningNode, token: str) -> Answer | None:
    answer = await pay_per_request(node, token)
    if answer.status == 503:
        return None
    return answer


async def test_a_refund_of_a_token_whose_redeem_was_left_unresolved(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    """The client asks for its money back instead of paying again: all of it comes back."""
    token = await ecash.token(300, mint_url=proxy.url)
    proxy.delay(SWAP, LATE_S, times=2)
    assert_error(await pay_per_request(node, token), 503, "cashu_mint_unreachable")
    await proxy.reached(SWAP, 2)

    refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})

    assert refund.status == 200, refund.raw
    assert refund.body["amount"] == 300
    assert await ecash.redeem(refund.body["cashu_token"]) == 300
    await assert_balanced(node)


# -- receive: a token creating an account -------------------------------------------------


async def test_a_create_whose_answer_is_lost_answers_the_same_keys_again(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(400, mint_url=proxy.url)
    proxy.drop(SWAP, times=2)  # the swap's answer and the answer to it sent again: lost

    lost = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})

    assert_error(lost, 503, "cashu_mint_unreachable")
    assert await ecash.is_spent(token)  # carried out at the mint
    again = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
    assert again.status == 201, again.raw
    assert again.body["balance_msat"] == 400_000
    same = await post(f"{node.url}/v1/balance/create", {"initial_balance_token": token})
    assert (same.status, same.body["api_key"]) == (200, again.body["api_key"])
    assert (await balance_of(node.url, bearer(again.body["api_key"])))["balance_msat"] == 400_000
    # now the keys were used: the token is a spent one
    used = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
    assert_error(used, 400, "cashu_token_spent")
    await assert_balanced(node)


# -- send: a withdrawal as a token -------------------------------------------------------


async def test_a_withdrawal_answered_late_hands_out_its_token(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)
    proxy.delay(SWAP, LATE_S)

    answer = await post(f"{node.url}/v1/wallet/withdraw", {"amount": 300}, auth)

    assert answer.status == 200, answer.raw
    assert answer.body["amount"] == 300
    assert await ecash.redeem(answer.body["cashu_token"]) == 300
    assert (await balance_of(node.url, auth))["balance_msat"] == 700_000
    await assert_balanced(node)


async def test_a_withdrawal_while_the_mint_stays_slow_finishes_by_itself(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)
    proxy.delay(SWAP, LATE_S, times=2)

    answer = await post(f"{node.url}/v1/wallet/withdraw", {"amount": 300}, auth)

    # neither undone nor lost: held until the mint says, then listed for the client
    assert_error(answer, 409, "operation_pending")
    held = await balance_of(node.url, auth)
    assert held["balance_msat"] + held["reserved_msat"] == 1_000_000
    listed = await until(lambda: listed_withdrawals(node.url, auth))
    assert [w["amount"] for w in listed] == [300]
    assert await ecash.redeem(listed[0]["cashu_token"]) == 300
    after = await until(lambda: settled_balance(node.url, auth))
    assert after["balance_msat"] == 700_000
    # the rest still pays out, and no proof handed out is spent
    rest = await post(f"{node.url}/v1/wallet/withdraw", {}, auth)
    assert rest.status == 200, rest.raw
    assert await ecash.redeem(rest.body["cashu_token"]) == 700
    await assert_balanced(node)


# -- melt: a withdrawal to an invoice ----------------------------------------------------


async def test_an_invoice_payment_answered_late_is_charged_once(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)
    proxy.delay(MELT, LATE_S)

    answer = await post(f"{node.url}/v1/wallet/withdraw", {"invoice": fake_invoice(200)}, auth)

    assert answer.status == 200, answer.raw
    assert answer.body["paid"] is True and answer.body["amount"] == 200
    after = await balance_of(node.url, auth)
    assert (after["balance_msat"], after["reserved_msat"]) == (
        (1000 - 200 - answer.body["fee"]) * 1000,
        0,
    )
    await assert_balanced(node)


async def test_an_invoice_payment_while_the_mint_stays_slow_is_held_then_charged_once(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory, mint: LocalMint
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)
    proxy.delay(MELT, LATE_S)
    proxy.delay(MELT_STATE, LATE_S, times=3)  # its state too, each time the node asks

    answer = await post(f"{node.url}/v1/wallet/withdraw", {"invoice": fake_invoice(200)}, auth)

    assert (answer.status, answer.body) == (202, {"paid": False, "pending": True, "amount": 200})
    held = await balance_of(node.url, auth)
    assert held["balance_msat"] + held["reserved_msat"] == 1_000_000  # nothing given back
    after = await until(lambda: settled_balance(node.url, auth))
    assert 797_000 <= after["balance_msat"] <= 800_000  # paid once, its fee at most the reserve
    proxy.clear()
    second = await post(f"{node.url}/v1/wallet/withdraw", {"invoice": fake_invoice(100)}, auth)
    assert second.status == 200 and second.body["paid"] is True, second.raw
    await assert_balanced(node)


# -- mint: Lightning in ---------------------------------------------------------------------


async def test_an_invoice_minted_with_its_answer_late_is_credited_once(
    node: RunningNode, proxy: MintProxy
) -> None:
    created = await post(f"{node.url}/v1/wallet/invoice", {"amount": 256})
    assert created.status == 201, created.raw
    proxy.delay(MINT, LATE_S, times=2)
    url = f"{node.url}/v1/wallet/invoice/{created.body['invoice_id']}"
    secret = {"X-Invoice-Secret": created.body["secret"]}

    async def keys() -> Answer | None:
        seen = await get(url, secret)
        return seen if seen.status == 200 and seen.body.get("api_key") else None

    claimed = await until(keys)
    assert claimed.body["balance_msat"] == 256_000
    paid = await balance_of(node.url, bearer(claimed.body["api_key"]))
    assert paid["balance_msat"] == 256_000
    await assert_balanced(node)


async def test_a_refund_asked_while_the_tokens_redeem_is_pending_is_409(
    node: RunningNode, proxy: MintProxy, ecash: EcashFactory
) -> None:
    """Routstr's refund with a token as the key, while that token's first use is still
    being redeemed: asked to wait (409), not told the key is wrong (401)."""
    token = await ecash.token(600, mint_url=proxy.url)
    key = {"Authorization": f"Bearer {token}"}
    proxy.hold(SWAP)
    first_use = asyncio.ensure_future(
        post(f"{node.url}/v1/chat/completions", chat_body("hi", max_tokens=20), key)
    )
    await proxy.came(SWAP)

    refund = await post(f"{node.url}/v1/balance/refund", b"", key)

    assert_error(refund, 409, "cashu_token_pending")
    proxy.release()
    assert (await first_use).status == 200
    refund = await post(f"{node.url}/v1/balance/refund", b"", key)
    assert refund.status == 200, refund.raw
    assert await ecash.redeem(refund.body["token"]) == int(refund.body["sats"]) > 0
    await assert_balanced(node)
