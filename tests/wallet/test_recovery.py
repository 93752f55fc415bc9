"""Crash recovery at every fault point, with a real SIGKILL and the real mint.

A child process (tests/support/fault_runner.py) runs one operation and kills itself at
the named point (no cleanup, no flush, as a power cut). The test then opens the wallet
on the same data directory, which runs recovery, and checks that the money is where it
must be: at the mint (NUT-07, nutshell's verdict on tokens) and in the ledger.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from support.crash import crash_at
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.postgres import database_url_for
from support.wallets import fund, ledger_state, open_wallet, query, recovered_wallet

from mints.directory import MintDirectory
from mints.errors import MintRefused
from mints.token import parse_token
from routstr_node.demo.mint import LocalMint, run_local_mint
from wallet.errors import TokenAlreadyRedeemed
from wallet.recovery import RecoveryReport
from wallet.service import WalletService


async def assert_balanced(node: WalletService) -> None:
    report = await node.audit()
    assert report.balanced, report.to_dict()
    assert report.pending_operations == 0


def pending_operations(data_dir: Path) -> list[tuple[Any, ...]]:
    return query(data_dir, "SELECT id, kind FROM operations WHERE state = 'pending'")


async def funded_account(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint, amount_sat: int
) -> int:
    """An account holding ``amount_sat`` in proofs 512 256 128 64 32 8 (for 1000)."""
    async with open_wallet(data_dir, [mint.url]) as node:
        return (await fund(node, ecash, mint.url, amount_sat)).account_id


# -- receive --------------------------------------------------------------------------------


async def test_crash_after_a_receive_is_written_carries_it_out_at_start(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    """Whether the swap left before the crash nobody knows: the identical swap is sent
    again, the mint does it once, and the token's owner gets the account by asking again."""
    token = await ecash.token(300, mint_url=mint.url)

    await crash_at("receive:written", data_dir, mint.url, "receive", token)

    [(op_id, kind)] = pending_operations(data_dir)
    assert kind == "receive"
    parsed = parse_token(token)
    mints = MintDirectory([mint.url])
    unrecovered = WalletService(data_dir, mints, database_url_for(data_dir))
    await unrecovered.open(recover=False)
    try:  # before recovery runs, a refund of the token resolves its redeem then and there
        assert await unrecovered.change_of(parsed) is None  # an account's, not a payment's
    finally:
        await unrecovered.close()
        await mints.close()
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([], [], [])
        state = ledger_state(data_dir)
        [(account_id, kind, balance, reserved)] = state.accounts
        assert (kind, balance, reserved) == ("key", 300_000, 0)
        assert state.operations == ((op_id, "receive", "done"),)
        assert await ecash.is_spent(token)
        await assert_balanced(node)

        # the client never got the keys: the same token asked again answers them
        account = await node.create_account(await node.mints.check_token(token))
        assert (account.account_id, account.credited_msat) == (account_id, 300_000)
        assert await node.ledger.account_id_for_key(account.api_key) == account_id
        assert ledger_state(data_dir).accounts == state.accounts
        await assert_balanced(node)


async def test_crash_after_a_receive_swapped_credits_exactly_once(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)

    await crash_at("receive:swapped", data_dir, mint.url, "receive", token)

    [(op_id, _)] = pending_operations(data_dir)
    assert await ecash.is_spent(token), "the mint swapped the token before the crash"
    assert ledger_state(data_dir).accounts == ()
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        state = ledger_state(data_dir)
        [(account_id, kind, balance, reserved)] = state.accounts
        assert (kind, balance, reserved) == ("key", 300_000, 0)
        assert state.unspent_sat == 300
        await assert_balanced(node)
        keys = await node.create_account(await node.mints.check_token(token))
        assert keys.account_id == account_id and keys.credited_msat == 300_000
        await node.ledger.account_id_for_key(keys.admin_key)  # used: never answered again
        with pytest.raises(TokenAlreadyRedeemed) as again:
            await node.create_account(await node.mints.check_token(token))
        assert again.value.account_id == account_id

    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([], [], [])
        assert ledger_state(data_dir).accounts == state.accounts
        await assert_balanced(node)


# -- send -----------------------------------------------------------------------------------


async def test_crash_after_a_send_is_written_carries_it_out_at_start(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded_account(data_dir, ecash, mint, 1000)

    # 100 is no sum of the proofs held (512 256 128 64 32 8): a swap is needed
    await crash_at("send:written", data_dir, mint.url, "send", str(account_id), "100")

    [(op_id, kind)] = pending_operations(data_dir)
    assert kind == "swap"
    assert ledger_state(data_dir).accounts == ((account_id, "key", 900_000, 100_000),)
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        state = ledger_state(data_dir)
        assert state.accounts == ((account_id, "key", 900_000, 0),)  # charged once
        assert state.unspent_sat == 900
        [(token, amount)] = query(data_dir, "SELECT token, amount_sat FROM outgoing_tokens")
        assert amount == 100
        assert [w.token for w in await node.withdrawals(account_id)] == [token]
        await assert_balanced(node)
        assert await ecash.redeem(token) == 100
        await assert_balanced(node)


async def test_crash_after_a_send_swapped_completes_the_withdrawal(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded_account(data_dir, ecash, mint, 1000)

    await crash_at("send:swapped", data_dir, mint.url, "send", str(account_id), "100")

    [(op_id, _)] = pending_operations(data_dir)
    assert query(data_dir, "SELECT COUNT(*) FROM outgoing_tokens") == [(0,)]
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        state = ledger_state(data_dir)
        assert state.accounts == ((account_id, "key", 900_000, 0),)  # charged once
        [(token, amount, purpose)] = query(
            data_dir, "SELECT token, amount_sat, purpose FROM outgoing_tokens"
        )
        assert (amount, purpose) == (100, "withdraw")
        # the client never got the answer: the token is where it can find it
        assert [w.token for w in await node.withdrawals(account_id)] == [token]
        await assert_balanced(node)

    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([], [], [])
        assert ledger_state(data_dir) == state

        assert await ecash.redeem(token) == 100  # an independent wallet takes it in full
        await assert_balanced(node)


# -- melt -----------------------------------------------------------------------------------


async def test_crash_after_a_melt_is_written_pays_it_once_at_start(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded_account(data_dir, ecash, mint, 1000)

    [quote_line] = await crash_at(
        "melt:written", data_dir, mint.url, "melt", str(account_id), fake_invoice(100)
    )

    [(op_id, kind)] = pending_operations(data_dir)
    assert kind == "melt"
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        client = node.mints.client(mint.url)
        quote = await client.get_melt_quote(quote_line["quote"])
        assert quote.state == "PAID"
        [(result,)] = query(data_dir, "SELECT result FROM operations WHERE id = ?", [op_id])
        cost = json.loads(result)["cost_sat"]
        assert 100 <= cost <= 100 + quote_line["fee_reserve"]
        account = await node.ledger.account(account_id)
        assert (account.balance_msat, account.reserved_msat) == ((1000 - cost) * 1000, 0)
        await assert_balanced(node)

        # the mint pays a quote once: asked again, nothing more is charged
        with pytest.raises(MintRefused):
            await node.custody.melt(account_id, mint.url, quote)
        assert (await node.ledger.account(account_id)).balance_msat == (1000 - cost) * 1000
        await assert_balanced(node)


async def test_crash_after_a_melt_paid_charges_once(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded_account(data_dir, ecash, mint, 1000)

    [quote_line] = await crash_at(
        "melt:paid", data_dir, mint.url, "melt", str(account_id), fake_invoice(100)
    )

    [(op_id, _)] = pending_operations(data_dir)
    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        client = node.mints.client(mint.url)
        quote = await client.get_melt_quote(quote_line["quote"])
        assert quote.state == "PAID"
        [(result,)] = query(data_dir, "SELECT result FROM operations WHERE id = ?", [op_id])
        cost = json.loads(result)["cost_sat"]
        assert 100 <= cost <= 100 + quote_line["fee_reserve"]
        account = await node.ledger.account(account_id)
        assert (account.balance_msat, account.reserved_msat) == ((1000 - cost) * 1000, 0)
        charges = query(
            data_dir,
            "SELECT COUNT(*) FROM journal WHERE kind = 'charge' AND account_id = ?",
            [account_id],
        )
        assert charges == [(1,)]
        await assert_balanced(node)
        state = ledger_state(data_dir)

        # the mint will not pay the same quote twice, and nothing is charged for trying
        with pytest.raises(MintRefused):
            await node.custody.melt(account_id, mint.url, quote)
        after = ledger_state(data_dir)
        assert (after.accounts, after.unspent_sat) == (state.accounts, state.unspent_sat)
        await assert_balanced(node)

    async with recovered_wallet(data_dir, [mint.url]) as (node, report):
        assert (report.completed, report.failed, report.still_pending) == ([], [], [])
        assert ledger_state(data_dir) == after
        await assert_balanced(node)


# -- the mint is away when the node restarts -----------------------------------------------


async def crashed_send_at_own_mint(
    tmp_path: Path, data_dir: Path, ecash: EcashFactory
) -> tuple[Path, int, str, int, int]:
    """A withdrawal of 100 of 1000 sat killed after its swap, at a mint of the test's own
    that is then stopped: (mint directory, port, url, account id, pending operation id)."""
    mint_dir = tmp_path / "own-mint"
    async with run_local_mint(mint_dir) as own:
        port, url = own.port, own.url
        account_id = await funded_account(data_dir, ecash, own, 1000)
        await crash_at("send:swapped", data_dir, url, "send", str(account_id), "100")
    [(op_id, _)] = pending_operations(data_dir)
    return mint_dir, port, url, account_id, op_id


async def test_recovery_waits_for_an_unreachable_mint(
    tmp_path: Path, data_dir: Path, ecash: EcashFactory
) -> None:
    """A crash, then a start while the mint is down: nothing is guessed, all is kept."""
    mint_dir, port, url, account_id, op_id = await crashed_send_at_own_mint(
        tmp_path, data_dir, ecash
    )

    async with recovered_wallet(data_dir, [url]) as (node, report):  # the mint is down
        assert (report.completed, report.failed, report.still_pending) == ([], [], [op_id])
        assert ledger_state(data_dir).accounts == ((account_id, "key", 900_000, 100_000),)
        audit = await node.audit()
        assert not audit.balanced and audit.problems and audit.pending_operations == 1

    async with (
        run_local_mint(mint_dir, port=port),
        recovered_wallet(data_dir, [url]) as (
            node,
            report,
        ),
    ):
        assert (report.completed, report.failed, report.still_pending) == ([op_id], [], [])
        assert ledger_state(data_dir).accounts == ((account_id, "key", 900_000, 0),)
        [(token,)] = query(data_dir, "SELECT token FROM outgoing_tokens")
        assert await ecash.redeem(token) == 100
        await assert_balanced(node)


async def test_a_running_node_resolves_what_was_left_pending(
    tmp_path: Path, data_dir: Path, ecash: EcashFactory
) -> None:
    """Not only at the next start: the node's background round finishes it once the mint
    is back, leaving alone what a request is still working on or has just written."""
    mint_dir, port, url, account_id, op_id = await crashed_send_at_own_mint(
        tmp_path, data_dir, ecash
    )

    async with recovered_wallet(data_dir, [url]) as (node, report):  # the mint is down
        assert report.still_pending == [op_id]
        assert (await node.resolve_stale(min_age_s=0)).still_pending == [op_id]
        async with run_local_mint(mint_dir, port=port):
            node.custody.live_operations.add(op_id)  # a request of this process has it
            assert await node.resolve_stale(min_age_s=0) == RecoveryReport()
            node.custody.live_operations.discard(op_id)
            assert await node.resolve_stale(min_age_s=3600) == RecoveryReport()  # too young
            assert (await node.resolve_stale(min_age_s=0)).completed == [op_id]
            assert ledger_state(data_dir).accounts == ((account_id, "key", 900_000, 0),)
            [(token,)] = query(data_dir, "SELECT token FROM outgoing_tokens")
            assert await ecash.redeem(token) == 100
            await assert_balanced(node)


async def test_an_operation_that_stays_pending_is_asked_about_less_often(
    tmp_path: Path, data_dir: Path, ecash: EcashFactory
) -> None:
    _, _, url, _, op_id = await crashed_send_at_own_mint(tmp_path, data_dir, ecash)
    async with recovered_wallet(data_dir, [url]) as (node, _):  # the mint stays away
        for _ in range(3):
            assert (await node.resolve_stale(min_age_s=0)).still_pending == [op_id]
        assert await node.resolve_stale(min_age_s=0) == RecoveryReport()  # backing off
        assert pending_operations(data_dir) == [(op_id, "swap")]


@pytest.mark.parametrize("operation", ["receive", "send", "melt"])
async def test_the_background_round_leaves_alone_what_a_request_is_doing(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint, operation: str
) -> None:
    """Run while a live request waits for the mint: the operation is pending in the
    database and old enough, yet only its own request may finish it."""
    async with open_wallet(data_dir, [mint.url]) as node:
        account = await fund(node, ecash, mint.url, 1000)
        token = await ecash.token(100, mint_url=mint.url)
        checked = await node.mints.check_token(token)
        work = {
            "receive": lambda: node.topup(account.account_id, checked),
            "send": lambda: node.withdraw(account.account_id, 100),
            "melt": lambda: node.withdraw_invoice(account.account_id, fake_invoice(50)),
        }[operation]
        request = asyncio.ensure_future(work())
        while not pending_operations(data_dir):  # written down, the mint not answered yet
            assert not request.done(), "the request finished before it could be seen"
            await asyncio.sleep(0)
        assert await node.resolve_stale(min_age_s=0) == RecoveryReport()
        await request
        assert pending_operations(data_dir) == []
        await assert_balanced(node)
