"""A fault campaign: many money operations, each under a fault drawn at random, then the
books of every client and of the node.

Operations: a request paid per request (X-Cashu), an account created from a token, a
withdrawal as a token, an invoice paid. Faults: an answer late once, a mint slow for
longer than the node waits (twice), an answer lost (twice), connections refused, the
mint paused, and the node killed (SIGKILL) while its request is on the way to the mint.
The client behaves as one should: it sends the same token again when told the mint did
not answer, and finds a lost withdrawal in its list.

What is measured: the msat every client put in, against what it got out (served
requests at their cost, change, withdrawn tokens redeemed by nutshell, balances, and
the sub-sat rest of change, which is earnings by contract). ``ROUTSTR_CAMPAIGN_OPERATIONS``
and ``ROUTSTR_CAMPAIGN_SEED`` make it longer or different; the summary line is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
from support.accounts import settled_balance
from support.e2e import Answer, chat_body, get, post, until
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.mint_proxy import MintProxy
from support.node import node_toml
from support.node_process import NodeProcess

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

OPERATIONS = int(os.environ.get("ROUTSTR_CAMPAIGN_OPERATIONS", "14"))
SEED = int(os.environ.get("ROUTSTR_CAMPAIGN_SEED", "16"))
MINT_TIMEOUT_S = 1.5
LATE_S = 3.0
SWAP = "POST /v1/swap"
MELT = "POST /v1/melt/bolt11"
MELT_STATE = "GET /v1/melt/quote/bolt11/"
PAY_SAT = 300
CREATE_SAT = 200
WITHDRAW_SAT = 50
INVOICE_SAT = 40
ACCOUNT_SAT = 20_000
_UNLIMITED = """
[limits]
requests_per_minute = 1000000
requests_per_hour = 1000000
requests_per_day = 1000000
"""


class Operation(StrEnum):
    PAY = "pay per request"
    CREATE = "create"
    WITHDRAW = "withdraw"
    INVOICE = "invoice"


class Fault(StrEnum):
    NONE = "none"
    LATE = "answer late"
    SLOW = "mint slow"
    LOST = "answer lost"
    REFUSED = "connection refused"
    PAUSED = "mint paused"
    KILLED = "node killed"


@dataclass
class Books:
    """What clients put in and got out, in msat."""

    put_in: int = 0
    served: int = 0  # requests' costs
    change_rest: int = 0  # the sub-sat part of X-Cashu change: earnings by contract
    handed_out: list[str] = field(default_factory=list)  # tokens to redeem elsewhere
    balances: int = 0
    invoices_paid: int = 0  # amount + fee of each invoice paid
    counts: Counter[str] = field(default_factory=Counter)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Campaign:
    node: NodeProcess
    proxy: MintProxy
    mint: LocalMint
    ecash: EcashFactory
    books: Books
    auth: dict[str, str] = field(default_factory=dict)

    async def run(self, operation: Operation, fault: Fault) -> None:
        self.books.counts[f"{operation} / {fault}"] += 1
        match operation:
            case Operation.PAY:
                await self._pay(fault)
            case Operation.CREATE:
                await self._create(fault)
            case Operation.WITHDRAW:
                await self._withdraw(fault)
            case Operation.INVOICE:
                await self._invoice(fault)
        self.proxy.clear()
        await self.proxy.accept()

    async def _attempt(
        self, route: str, fault: Fault, request: Callable[[], Awaitable[Answer]]
    ) -> Answer | None:
        """The first attempt under the fault: its answer, or None when the node died."""
        proxy = self.proxy
        match fault:
            case Fault.NONE:
                return await request()
            case Fault.LATE:
                proxy.delay(route, LATE_S)
                if route == MELT:
                    proxy.delay(MELT_STATE, LATE_S)
                return await request()
            case Fault.SLOW:
                proxy.delay(route, LATE_S, times=2)
                if route == MELT:
                    proxy.delay(MELT_STATE, LATE_S, times=3)
                return await request()
            case Fault.LOST:
                proxy.drop(route, times=2)
                return await request()
            case Fault.REFUSED:
                await proxy.refuse()
                try:
                    return await request()
                finally:
                    await proxy.accept()
            case Fault.PAUSED:
                os.kill(self.mint.process.pid, signal.SIGSTOP)
                try:
                    return await request()
                finally:
                    os.kill(self.mint.process.pid, signal.SIGCONT)
            case Fault.KILLED:
                proxy.hold(route)
                sent = asyncio.ensure_future(request())
                came = asyncio.ensure_future(proxy.came(route))
                await asyncio.wait({sent, came}, return_when=asyncio.FIRST_COMPLETED)
                if sent.done():  # the operation needed no call to the mint
                    came.cancel()
                    proxy.clear()
                    return sent.result()
                await self.node.kill()
                with contextlib.suppress(aiohttp.ClientError):
                    await sent
                proxy.release()
                await proxy.reached(route)
                await self.node.start()
                return None

    async def _until_answered(self, request: Callable[[], Awaitable[Answer]]) -> Answer:
        """Sent again while the node says the mint has not answered yet."""

        async def answered() -> Answer | None:
            answer = await request()
            return None if answer.status in (409, 503) else answer

        return await until(answered, 60.0)

    async def _pay(self, fault: Fault) -> None:
        token = await self.ecash.token(PAY_SAT, mint_url=self.proxy.url)
        self.books.put_in += PAY_SAT * 1000
        url = f"{self.node.url}/v1/chat/completions"

        def request() -> Awaitable[Answer]:
            return post(url, chat_body("hello", max_tokens=20), {"X-Cashu": token})

        first = await self._attempt(SWAP, fault, request)
        answer = first if first is not None and first.status == 200 else None
        if answer is None:
            answer = await self._until_answered(request)
        assert answer.status == 200, answer.raw[:300]
        cost = int(answer.headers["X-Routstr-Cost-Msats"])
        change = answer.headers["X-Cashu"]
        self.books.served += cost
        self.books.change_rest += (PAY_SAT * 1000 - cost) % 1000
        self.books.handed_out.append(change)

    async def _create(self, fault: Fault) -> None:
        token = await self.ecash.token(CREATE_SAT, mint_url=self.proxy.url)
        self.books.put_in += CREATE_SAT * 1000
        url = f"{self.node.url}/v1/wallet/create"

        def request() -> Awaitable[Answer]:
            return post(url, {"cashu_token": token})

        first = await self._attempt(SWAP, fault, request)
        answer = first if first is not None and first.status == 201 else None
        if answer is None:
            answer = await self._until_answered(request)
        assert answer.status == 201, answer.raw[:300]
        key = {"Authorization": f"Bearer {answer.body['api_key']}"}
        seen = await get(f"{self.node.url}/v1/wallet/balance", key)
        assert seen.body["balance_msat"] == CREATE_SAT * 1000, seen.raw
        self.books.balances += seen.body["balance_msat"]

    async def _withdraw(self, fault: Fault) -> None:
        url = f"{self.node.url}/v1/wallet/withdraw"

        def request() -> Awaitable[Answer]:
            return post(url, {"amount": WITHDRAW_SAT}, self.auth)

        first = await self._attempt(SWAP, fault, request)
        if first is None or first.status in (409, 503):
            # a withdrawal whose answer was lost: done or undone by the node, never both;
            # its token, if done, is in the list read at the end
            await self._account_settled()
        else:
            assert first.status == 200, first.raw[:300]

    async def _invoice(self, fault: Fault) -> None:
        before = await self._account_settled()
        url = f"{self.node.url}/v1/wallet/withdraw"

        def request() -> Awaitable[Answer]:
            return post(url, {"invoice": fake_invoice(INVOICE_SAT)}, self.auth)

        first = await self._attempt(MELT, fault, request)
        after = await self._account_settled()
        spent = before - after
        if first is not None and first.status == 200:
            assert spent == (INVOICE_SAT + first.body["fee"]) * 1000
        # paid once (the fee no more than a few sat of reserve), or not at all
        assert spent == 0 or INVOICE_SAT * 1000 <= spent <= (INVOICE_SAT + 3) * 1000, spent
        self.books.invoices_paid += spent

    async def _account_settled(self) -> int:
        seen = await until(lambda: settled_balance(self.node.url, self.auth), 60.0)
        return int(seen["balance_msat"])


async def test_custody_campaign(
    tmp_path: Path,
    proxy: MintProxy,
    mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    port = _free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        node_toml(
            tmp_path / "data",
            port,
            [proxy.url],
            upstream.url,
            _UNLIMITED,  # the client polls while the node finishes what a fault left
            mint_timeout_s=MINT_TIMEOUT_S,
        )
    )
    node = NodeProcess(config, port)
    await node.start()
    books = Books()
    try:
        funding = await ecash.token(ACCOUNT_SAT, mint_url=proxy.url)
        created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": funding})
        books.put_in += ACCOUNT_SAT * 1000
        campaign = Campaign(
            node, proxy, mint, ecash, books, {"Authorization": f"Bearer {created.body['api_key']}"}
        )
        rng = random.Random(SEED)
        for _ in range(OPERATIONS):
            await campaign.run(rng.choice(list(Operation)), rng.choice(list(Fault)))

        report = await _quiet_and_balanced(node)
        listed = await get(f"{node.url}/v1/wallet/withdrawals", campaign.auth)
        withdrawn = [w["cashu_token"] for w in listed.body["withdrawals"]]
        books.handed_out += withdrawn
        books.balances += await campaign._account_settled()
    finally:
        await node.kill()

    got_out = books.served + books.change_rest + books.balances + books.invoices_paid
    for token in books.handed_out:  # every token handed out pays in full elsewhere
        amount = ecash.amount(token)
        assert await ecash.redeem(token) == amount, token
        got_out += amount * 1000
    lost = books.put_in - got_out
    faulted = sum(n for name, n in books.counts.items() if not name.endswith("/ none"))
    print(
        f"\ncustody campaign: {OPERATIONS} operations, {faulted} under faults"
        f" ({len(books.counts)} kinds of operation and fault), {lost} msat lost;"
        f" audit balanced, difference {report['difference_msat']} msat"
    )
    assert lost == 0, books


async def _quiet_and_balanced(node: NodeProcess) -> dict[str, Any]:
    """The audit once no operation is pending any more."""

    async def quiet() -> dict[str, Any] | None:
        report = await run_audit(load_settings(node.config))
        return report if report["pending_operations"] == 0 else None

    report = await until(quiet, 60.0)
    assert report["balanced"] and report["difference_msat"] == 0, report
    return report
