"""The operator's books and earnings out (contract section 13): balances, the audit,
withdrawals as a token and to an invoice, never more than the earnings, idempotency,
and withdrawals racing each other and client traffic."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict
from support.e2e import Answer, assert_balanced, assert_error, chat_body, post
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.node import RunningNode, run_node
from support.wallets import query

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "admin password for earnings tests"


@asynccontextmanager
async def signed_in(
    directory: Path, mint_url: str, upstream: RunningUpstream, extra: str = ""
) -> AsyncIterator[tuple[RunningNode, aiohttp.ClientSession]]:
    toml = f'[admin]\npassword = "{PASSWORD}"\n{extra}'
    async with (
        run_node(directory, [mint_url], upstream.url, extra_toml=toml) as node,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin,
    ):
        login = await admin.post(f"{node.url}/admin/login", json={"password": PASSWORD})
        assert login.status == 200
        yield node, admin


async def admin_call(
    admin: aiohttp.ClientSession,
    node: RunningNode,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    async with admin.request(method, f"{node.url}{path}", json=body, headers=headers) as resp:
        raw = await resp.read()
        return Answer(resp.status, CIMultiDict(resp.headers), await resp.json(), raw)


async def books(admin: aiohttp.ClientSession, node: RunningNode) -> dict[str, Any]:
    answer = await admin_call(admin, node, "GET", "/admin/api/balances")
    assert answer.status == 200, answer.raw
    body: dict[str, Any] = answer.body
    return body


def client_liabilities(node: RunningNode) -> int:
    """What the clients are owed, read from the ledger: every account but payouts'."""
    rows = query(
        node.data_dir,
        "SELECT COALESCE(SUM(balance_msat + reserved_msat), 0) FROM accounts"
        " WHERE id NOT IN (SELECT account_id FROM payouts)",
    )
    return int(rows[0][0])


async def pay_requests(node: RunningNode, key: str, count: int) -> int:
    """``count`` paid chat requests with the key; what they cost (msat)."""
    cost = 0
    for i in range(count):
        answer = await post(
            f"{node.url}/v1/chat/completions",
            chat_body(f"request {i}", max_tokens=20),
            {"Authorization": f"Bearer {key}"},
        )
        assert answer.status == 200, answer.raw
        cost += int(answer.headers["X-Routstr-Cost-Msats"])
    return cost


async def mixed_run(node: RunningNode, ecash: EcashFactory, mint: LocalMint) -> tuple[str, int]:
    """An sk- account, X-Cashu payments and a token used as a key, each paying requests:
    the key of the sk- account (with money left on it) and the earnings made (msat)."""
    created = await post(
        f"{node.url}/v1/wallet/create", {"cashu_token": await ecash.token(3000, mint_url=mint.url)}
    )
    assert created.status == 201, created.raw
    key = created.body["api_key"]
    earned = await pay_requests(node, key, 3)
    for i in range(2):
        paid = await post(
            f"{node.url}/v1/chat/completions",
            chat_body(f"x-cashu {i}", max_tokens=10),
            {"X-Cashu": await ecash.token(700, mint_url=mint.url)},
        )
        assert paid.status == 200, paid.raw
        earned += int(paid.headers["X-Routstr-Cost-Msats"])
    as_key = await ecash.token(900, mint_url=mint.url)
    earned += await pay_requests(node, as_key, 2)
    return key, earned


async def test_earnings_of_a_mixed_run_are_withdrawn_as_a_token_worth_its_face_value(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        _, earned = await mixed_run(node, ecash, mint)
        before = await books(admin, node)
        owed = client_liabilities(node)
        totals = before["totals"]
        # X-Cashu change rounding goes to earnings too: at least what requests cost
        assert totals["earnings_msat"] >= earned
        assert totals["liabilities_msat"] == owed
        assert totals["custody_msat"] == owed + totals["earnings_msat"]
        assert totals["withdrawable_msat"] == totals["earnings_msat"] // 1000 * 1000
        [at_mint] = before["mints"]
        assert at_mint["url"] == mint.url and at_mint["trusted"] is True
        assert at_mint["earnings_msat"] == totals["earnings_msat"]
        assert before["audit"]["balanced"] is True
        assert before["audit"]["difference_msat"] == 0

        out = await admin_call(admin, node, "POST", "/admin/api/withdraw", {"mint": mint.url})
        assert out.status == 200, out.raw
        assert out.body["mint"] == mint.url
        assert out.body["amount"] == totals["withdrawable_msat"] // 1000
        assert await ecash.redeem(out.body["cashu_token"]) == out.body["amount"]

        after = await books(admin, node)
        assert after["totals"]["earnings_msat"] == totals["earnings_msat"] % 1000
        assert after["totals"]["withdrawable_msat"] == 0
        assert client_liabilities(node) == owed  # not a msat of the clients' money
        audit = await admin_call(admin, node, "POST", "/admin/api/audit")
        assert audit.status == 200 and audit.body["balanced"] is True, audit.raw
        assert isinstance(audit.body["at"], int)
        nothing = await admin_call(admin, node, "POST", "/admin/api/withdraw", {})
        assert_error(nothing, 400, "insufficient_earnings")
        listed = await admin_call(admin, node, "GET", "/admin/api/payouts")
        [payout] = listed.body["payouts"]
        assert payout["state"] == "paid" and payout["kind"] == "token"
        await assert_balanced(node)


async def test_earnings_pay_an_invoice_with_the_fee_from_earnings(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        await mixed_run(node, ecash, mint)
        before = (await books(admin, node))["totals"]
        owed = client_liabilities(node)
        amount = before["earnings_msat"] // 1000 // 2
        paid = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"invoice": fake_invoice(amount)}
        )
        assert paid.status == 200, paid.raw
        assert paid.body["paid"] is True and paid.body["amount"] == amount
        fee = paid.body["fee"]
        assert fee >= 0
        after = (await books(admin, node))["totals"]
        assert after["earnings_msat"] == before["earnings_msat"] - (amount + fee) * 1000
        assert client_liabilities(node) == owed
        await assert_balanced(node)


async def test_more_than_the_earnings_is_refused_and_nothing_moves(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        await mixed_run(node, ecash, mint)
        before = await books(admin, node)
        earned_sat = before["totals"]["earnings_msat"] // 1000
        too_much = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"amount": earned_sat + 1}
        )
        assert_error(too_much, 400, "insufficient_earnings")
        invoice = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"invoice": fake_invoice(earned_sat)}
        )
        assert_error(invoice, 400, "insufficient_earnings")  # no room for the mint's fee
        bad = await admin_call(admin, node, "POST", "/admin/api/withdraw", {"amount": 1.5})
        assert_error(bad, 400, "invalid_amount")
        elsewhere = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"mint": "http://127.0.0.1:9"}
        )
        assert_error(elsewhere, 400, "cashu_mint_untrusted")
        after = await books(admin, node)
        assert after["totals"] == before["totals"]
        assert query(node.data_dir, "SELECT COUNT(*) FROM payouts") == [(0,)]
        anonymous = await post(f"{node.url}/admin/api/withdraw", {})
        assert anonymous.status == 401
        await assert_balanced(node)


async def test_a_repeated_withdrawal_answers_the_same_and_pays_once(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        await mixed_run(node, ecash, mint)
        before = (await books(admin, node))["totals"]["earnings_msat"]
        key = {"Idempotency-Key": "payout-1"}
        first, second = await asyncio.gather(
            admin_call(admin, node, "POST", "/admin/api/withdraw", {"amount": 5}, key),
            admin_call(admin, node, "POST", "/admin/api/withdraw", {"amount": 5}, key),
        )
        assert first.status == second.status == 200, (first.raw, second.raw)
        assert first.body == second.body
        again = await admin_call(admin, node, "POST", "/admin/api/withdraw", {"amount": 5}, key)
        assert again.body == first.body
        invoice = fake_invoice(3)
        key = {"Idempotency-Key": "payout-2"}
        paid = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"invoice": invoice}, key
        )
        assert paid.status == 200, paid.raw
        repeat = await admin_call(
            admin, node, "POST", "/admin/api/withdraw", {"invoice": invoice}, key
        )
        assert repeat.status == 200 and repeat.body == paid.body
        # the same key on a different payout is refused, and pays nothing
        for reused, body in (
            ("payout-1", {"amount": 6}),
            ("payout-1", {"invoice": fake_invoice(4)}),
            ("payout-2", {"invoice": fake_invoice(4)}),
            ("payout-2", {"amount": 3}),
        ):
            refused = await admin_call(
                admin, node, "POST", "/admin/api/withdraw", body, {"Idempotency-Key": reused}
            )
            assert_error(refused, 400, "idempotency_key_reused")
        after = (await books(admin, node))["totals"]["earnings_msat"]
        assert after == before - (5 + first.body["fee"] + 3 + paid.body["fee"]) * 1000
        assert query(node.data_dir, "SELECT COUNT(*) FROM payouts") == [(2,)]
        assert await ecash.redeem(first.body["cashu_token"]) == 5
        await assert_balanced(node)


async def test_withdrawals_racing_each_other_and_clients_never_touch_liabilities(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        key, _ = await mixed_run(node, ecash, mint)
        start = await books(admin, node)
        owed = client_liabilities(node)
        earnings = start["totals"]["earnings_msat"]
        part = earnings // 1000 // 4
        withdrawals = [
            admin_call(admin, node, "POST", "/admin/api/withdraw", {"amount": part})
            for _ in range(7)
        ]
        invoices = [
            admin_call(admin, node, "POST", "/admin/api/withdraw", {"invoice": fake_invoice(part)})
            for _ in range(3)
        ]
        clients = [pay_requests(node, key, 2) for _ in range(3)]
        *answers, c1, c2, c3 = await asyncio.gather(*withdrawals, *invoices, *clients)
        charged = c1 + c2 + c3
        paid_out = 0
        for answer in answers:
            if answer.status == 200:
                paid_out += (answer.body["amount"] + answer.body["fee"]) * 1000
            else:
                assert_error(answer, 400, "insufficient_earnings")
        assert 0 < paid_out <= earnings + charged
        assert client_liabilities(node) == owed - charged  # only what the requests cost
        end = await books(admin, node)
        assert end["totals"]["earnings_msat"] == earnings + charged - paid_out
        assert end["totals"]["liabilities_msat"] == owed - charged
        await assert_balanced(node)


async def routstr_node(*args: str) -> tuple[int, Any]:
    """The command as an operator runs it; its exit code and the JSON it printed."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "routstr-node"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    assert out, err
    return process.returncode, json.loads(out)


async def test_the_command_line_prints_the_books_and_pays_out_beside_the_node_and_without(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with signed_in(tmp_path, mint.url, upstream) as (node, admin):
        await mixed_run(node, ecash, mint)
        config = str(node.config_path)
        code, printed = await routstr_node("earnings", "--config", config)
        assert code == 0
        assert printed["totals"] == (await books(admin, node))["totals"]
        assert printed["audit"]["balanced"] is True
        earned = printed["totals"]["earnings_msat"]

        # the running node pays: the command asks it
        code, paid = await routstr_node("earnings", "withdraw", "--config", config, "--amount", "4")
        assert code == 0, paid
        assert paid["amount"] == 4 and paid["mint"] == mint.url
        assert await ecash.redeem(paid["cashu_token"]) == 4
        listed = await admin_call(admin, node, "GET", "/admin/api/payouts")
        assert [p["cashu_token"] for p in listed.body["payouts"]] == [paid["cashu_token"]]
        code, refused = await routstr_node(
            "earnings", "withdraw", "--config", config, "--amount", str(earned // 1000)
        )
        assert code == 1 and refused["error"]["code"] == "insufficient_earnings"
        code, invoice = await routstr_node(
            "earnings", "withdraw", "--config", config, "--invoice", fake_invoice(2)
        )
        assert code == 0 and invoice["paid"] is True, invoice
    assert not (node.data_dir / "admin-cli.key").exists()

    # no node runs (a key file left by a killed node holds no lock): the command pays itself
    (node.data_dir / "admin-cli.key").write_text("left by a node that was killed")
    code, rest = await routstr_node("earnings", "withdraw", "--config", config)
    assert code == 0, rest
    assert await ecash.redeem(rest["cashu_token"]) == rest["amount"]
    code, printed = await routstr_node("earnings", "--config", config)
    assert printed["totals"]["withdrawable_msat"] == 0
    assert printed["totals"]["earnings_msat"] < 1000
    assert printed["audit"]["balanced"] is True
