"""Custody against the real mints: receiving, sending and paying invoices, to the msat.

Every token comes from nutshell's wallet, every token the node hands out is redeemed
by nutshell's wallet, and the audit (which asks the mint, NUT-07) balances after each.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.wallets import fund, ledger_state

from mints.errors import MintUntrusted, ProofsSpent
from mints.keysets import amount_split
from mints.token import encode_token, parse_token
from routstr_node.demo.mint import LocalMint
from wallet.custody import SentToken
from wallet.errors import (
    AdminKeyTaken,
    InsufficientBalance,
    PaymentInFlight,
    TokenAlreadyRedeemed,
    TokenBeingRedeemed,
)
from wallet.service import NewAccount, WalletService
from wallet.sqlite.custody import COINS_PER_AMOUNT


async def assert_balanced(node: WalletService) -> None:
    report = await node.audit()
    assert report.balanced, report.to_dict()
    assert report.difference_msat == 0
    assert report.journal_consistent
    assert report.pending_operations == 0


async def balance(node: WalletService, account_id: int) -> tuple[int, int]:
    account = await node.ledger.account(account_id)
    return account.balance_msat, account.reserved_msat


# -- receiving ------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
async def test_create_account_credits_exactly_the_token_value(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, legacy: bool
) -> None:
    token = await ecash.token(1000, mint_url=mint.url, legacy=legacy)

    account = await node.create_account(await node.mints.check_token(token))

    assert account.credited_msat == 1_000_000
    assert account.mint_url == mint.url
    assert await balance(node, account.account_id) == (1_000_000, 0)
    by_key = await node.ledger.account_by_api_key(account.api_key)
    by_admin = await node.ledger.account_by_admin_key(account.admin_key)
    assert by_key is not None and by_key.id == account.account_id and by_key.kind == "key"
    assert by_admin is not None and by_admin.id == account.account_id
    assert await ecash.is_spent(token)
    report = await node.audit()
    assert report.custody_unspent_msat == 1_000_000
    await assert_balanced(node)


async def test_topup_adds_the_token_value(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 300)
    token = await ecash.token(45, mint_url=mint.url, legacy=True)

    received = await node.topup(account.account_id, await node.mints.check_token(token))

    assert (received.account_id, received.credited_msat, received.fee_sat) == (
        account.account_id,
        45_000,
        0,
    )
    assert await balance(node, account.account_id) == (345_000, 0)
    await assert_balanced(node)


async def test_redeeming_a_token_twice_is_refused_and_changes_nothing(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(200, mint_url=mint.url)
    account = await node.create_account(await node.mints.check_token(token))
    await node.ledger.account_id_for_key(account.api_key)  # the client got its keys
    other = await fund(node, ecash, mint.url, 10)
    before = ledger_state(data_dir)
    parsed = parse_token(token)
    same_proofs_as_a = encode_token(mint.url, parsed.proofs, legacy=True)

    for text in (token, same_proofs_as_a):
        checked = await node.mints.check_token(text)
        with pytest.raises(TokenAlreadyRedeemed) as refused:
            await node.create_account(checked)
        assert refused.value.account_id == account.account_id
        with pytest.raises(TokenAlreadyRedeemed):
            await node.topup(other.account_id, checked)
        with pytest.raises(TokenAlreadyRedeemed):
            await node.redeem_for_request(checked, 1_000)

    assert ledger_state(data_dir) == before
    await assert_balanced(node)


async def test_a_create_asked_again_answers_the_same_keys_until_one_is_used(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    """The answer of a create may be lost; the token's owner asks again and gets the same
    account, in either encoding, but never once its keys have been used."""
    token = await ecash.token(200, mint_url=mint.url)
    first = await node.create_account(await node.mints.check_token(token))
    before = ledger_state(data_dir)
    as_a = encode_token(mint.url, parse_token(token).proofs, legacy=True)

    for text in (token, as_a):
        again = await node.create_account(await node.mints.check_token(text))
        assert again == first
    assert ledger_state(data_dir) == before  # no second credit, nothing moved

    # the same proofs with another signature (someone who saw the secrets spent) get nothing
    forged = encode_token(
        mint.url, [replace(p, C="02" + "11" * 32) for p in parse_token(token).proofs]
    )
    with pytest.raises(TokenAlreadyRedeemed):
        await node.create_account(await node.mints.check_token(forged))

    assert await node.ledger.account_id_for_key(first.api_key) == first.account_id
    with pytest.raises(TokenAlreadyRedeemed):
        await node.create_account(await node.mints.check_token(token))
    assert ledger_state(data_dir).accounts == before.accounts
    await assert_balanced(node)


async def test_a_create_with_the_clients_own_admin_key(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    own = "my-own-admin-key-" + "x" * 8
    account = await node.create_account(await node.mints.check_token(token), own)
    assert account.admin_key == own and account.api_key.startswith("sk-")
    assert (await node.ledger.account_by_admin_key(own)) is not None
    # asked again, the same admin key answers the same keys; another one does not
    checked = await node.mints.check_token(token)
    assert await node.create_account(checked, own) == account
    with pytest.raises(TokenAlreadyRedeemed):
        await node.create_account(checked, own + "-other")
    with pytest.raises(TokenAlreadyRedeemed):
        await node.create_account(checked)
    # another token cannot take an admin key in use
    other = await ecash.token(100, mint_url=mint.url)
    with pytest.raises(AdminKeyTaken):
        await node.create_account(await node.mints.check_token(other), own)
    assert not await ecash.is_spent(other)  # refused before any swap


async def test_a_token_spent_elsewhere_credits_nothing(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(50, mint_url=mint.url)
    checked = await node.mints.check_token(token)
    assert await ecash.redeem(token) == 50

    with pytest.raises(ProofsSpent):
        await node.create_account(checked)

    state = ledger_state(data_dir)
    assert state.accounts == () and state.journal_rows == 0 and state.unspent_sat == 0
    assert [op[2] for op in state.operations] == ["failed"]
    await assert_balanced(node)


async def test_the_same_token_from_ten_tasks_is_credited_once(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    as_a = encode_token(mint.url, parse_token(token).proofs, legacy=True)
    checked = [await node.mints.check_token(token if i % 2 else as_a) for i in range(10)]

    outcomes = await asyncio.gather(
        *(node.create_account(c) for c in checked), return_exceptions=True
    )

    created = [o for o in outcomes if isinstance(o, NewAccount)]
    refused = [o for o in outcomes if not isinstance(o, NewAccount)]
    assert len(created) == 1, outcomes
    assert all(isinstance(o, TokenBeingRedeemed | TokenAlreadyRedeemed) for o in refused), refused
    state = ledger_state(data_dir)
    assert len(state.accounts) == 1
    assert state.total_balance_msat == 500_000 == created[0].credited_msat
    await assert_balanced(node)


async def test_the_same_token_as_a_key_from_ten_tasks_is_one_account(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    checked = await node.mints.check_token(token)

    outcomes = await asyncio.gather(
        *(node.redeem_as_key(checked) for _ in range(10)), return_exceptions=True
    )

    ids = {o for o in outcomes if isinstance(o, int)}
    assert len(ids) == 1, outcomes
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert all(isinstance(o, TokenBeingRedeemed) for o in refused), refused
    assert await node.redeem_as_key(checked) in ids
    state = ledger_state(data_dir)
    assert len(state.accounts) == 1 and state.total_balance_msat == 300_000
    await assert_balanced(node)


async def test_a_token_used_as_a_key_is_one_account_on_every_later_use(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    first = await node.redeem_as_key(await node.mints.check_token(token))
    row = await node.ledger.account(first)
    assert (row.kind, row.balance_msat, row.token_id) == (
        "token",
        100_000,
        parse_token(token).token_id,
    )

    reservation = await node.ledger.reserve(first, 30_000)
    await node.ledger.settle(reservation, 25_000)

    as_a = encode_token(mint.url, parse_token(token).proofs, legacy=True)
    for text in (token, as_a, token):
        assert await node.redeem_as_key(await node.mints.check_token(text)) == first
    assert await balance(node, first) == (75_000, 0)  # later uses spend what is left
    other = await node.redeem_as_key(
        await node.mints.check_token(await ecash.token(7, mint_url=mint.url))
    )
    assert other != first
    assert len(ledger_state(data_dir).accounts) == 2
    await assert_balanced(node)


async def test_a_token_that_funded_an_sk_account_is_no_key_to_it(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 1000)
    gift = await ecash.token(10, mint_url=mint.url)  # its sender still knows this string
    await node.topup(account.account_id, await node.mints.check_token(gift))

    taken: int | None
    try:
        taken = await node.redeem_as_key(await node.mints.check_token(gift))
    except TokenAlreadyRedeemed:
        taken = None
    assert taken is None, f"the token's sender now spends account {taken}'s 1010 sat"


async def test_outputs_derived_while_the_mint_swaps_serve_the_next_redeem(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    """The second redeem's outputs were derived during the first one's swap; they are
    signed, stored and spendable like any other (an independent wallet redeems them)."""
    first = await fund(node, ecash, mint.url, 100)
    keyset = await node.mints.client(mint.url).active_keyset()
    assert node.custody.outputs.ready(keyset.id) > 0

    token = await ecash.token(1000, mint_url=mint.url)
    second = await node.create_account(await node.mints.check_token(token))
    assert second.credited_msat == 1_000_000
    await assert_balanced(node)
    sent = await node.withdraw_token(second.account_id, 1000)
    assert await ecash.redeem(sent.token) == 1000
    assert await balance(node, first.account_id) == (100_000, 0)
    await assert_balanced(node)


# -- sending tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
@pytest.mark.parametrize("amount", [100, 520], ids=["swap", "exact-proofs"])
async def test_withdraw_token_is_redeemable_for_its_full_value(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, legacy: bool, amount: int
) -> None:
    account = await fund(node, ecash, mint.url, 1000)  # proofs 512 256 128 64 32 8

    sent = await node.withdraw_token(account.account_id, amount, legacy=legacy)

    assert isinstance(sent, SentToken)
    assert (sent.amount_sat, sent.fee_sat, sent.mint_url) == (amount, 0, mint.url)
    assert sent.token.startswith("cashuA" if legacy else "cashuB")
    assert EcashFactory.amount(sent.token) == amount
    assert await balance(node, account.account_id) == ((1000 - amount) * 1000, 0)
    await assert_balanced(node)
    assert await ecash.redeem(sent.token) == amount
    await assert_balanced(node)


async def test_a_custody_of_small_proofs_sends_a_token_of_few(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    """24 one-sat proofs would make a 24-proof token (too big for a header at scale):
    they are swapped for the amount's own denominations instead."""
    account = await fund(node, ecash, mint.url, 1)
    for _ in range(23):
        await node.topup(account.account_id, await node.mints.check_token(
            await ecash.token(1, mint_url=mint.url)
        ))  # fmt: skip

    sent = await node.withdraw_token(account.account_id, 24)

    assert len(parse_token(sent.token).proofs) == len(amount_split(24)) == 2
    assert (sent.amount_sat, sent.fee_sat) == (24, 0)
    assert await balance(node, account.account_id) == (0, 0)
    assert await ecash.redeem(sent.token) == 24
    await assert_balanced(node)


async def test_a_send_that_needs_more_proofs_of_one_amount_than_selection_reads(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    """Selection reads a few proofs of each amount (custody only grows); when those
    cannot pay, it reads every one: 67 one-sat proofs pay 67 sat."""
    account = await fund(node, ecash, mint.url, 1)
    for _ in range(COINS_PER_AMOUNT + 2):
        await node.topup(account.account_id, await node.mints.check_token(
            await ecash.token(1, mint_url=mint.url)
        ))  # fmt: skip

    sent = await node.withdraw_token(account.account_id, COINS_PER_AMOUNT + 3)

    assert len(parse_token(sent.token).proofs) == len(amount_split(67)) == 3
    assert await balance(node, account.account_id) == (0, 0)
    assert await ecash.redeem(sent.token) == 67
    await assert_balanced(node)


async def test_withdraw_everything(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 777)
    await fund(node, ecash, mint.url, 333)  # another account's proofs at the same mint

    sent = await node.withdraw_token(account.account_id, None)

    assert sent.amount_sat == 777 and sent.fee_sat == 0
    assert await balance(node, account.account_id) == (0, 0)
    assert await ecash.redeem(sent.token) == 777
    with pytest.raises(InsufficientBalance):
        await node.withdraw_token(account.account_id, None)
    await assert_balanced(node)


async def test_withdraw_more_than_the_balance_is_refused(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    poor = await fund(node, ecash, mint.url, 100)
    await fund(node, ecash, mint.url, 1000)
    before = ledger_state(data_dir)

    with pytest.raises(InsufficientBalance):
        await node.withdraw_token(poor.account_id, 101)
    with pytest.raises(InsufficientBalance):
        await node.withdraw_token(poor.account_id, 600)
    with pytest.raises(MintUntrusted):
        await node.withdraw_token(poor.account_id, 10, "http://127.0.0.1:9")

    assert ledger_state(data_dir) == before
    await assert_balanced(node)


async def test_withdraw_beyond_the_custody_is_an_insufficient_balance(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 100)

    with pytest.raises(InsufficientBalance):
        await node.withdraw_token(account.account_id, 5000)


# -- paying invoices ----------------------------------------------------------------------


async def test_melt_pays_a_foreign_invoice_and_charges_amount_plus_fee(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 1000)
    quote = await node.custody.melt_quote(mint.url, fake_invoice(100))
    assert quote.amount == 100 and quote.state == "UNPAID"

    result = await node.custody.melt(account.account_id, mint.url, quote)

    assert (result.state, result.amount_sat) == ("PAID", 100)
    assert 0 <= result.fee_sat <= quote.fee_reserve
    # the fee reserve was only held: what the payment did not use came back
    assert await balance(node, account.account_id) == ((1000 - 100 - result.fee_sat) * 1000, 0)
    assert (await node.mints.client(mint.url).get_melt_quote(quote.quote)).state == "PAID"
    await assert_balanced(node)


async def test_melt_beyond_the_balance_is_refused_and_holds_nothing(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    poor = await fund(node, ecash, mint.url, 100)
    await fund(node, ecash, mint.url, 1000)
    before = ledger_state(data_dir)
    quote = await node.custody.melt_quote(mint.url, fake_invoice(99))  # + fee reserve > 100

    with pytest.raises(InsufficientBalance):
        await node.custody.melt(poor.account_id, mint.url, quote)

    assert ledger_state(data_dir) == before
    assert (await node.mints.client(mint.url).get_melt_quote(quote.quote)).state == "UNPAID"
    await assert_balanced(node)


async def test_melt_beyond_the_custody_is_an_insufficient_balance(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account = await fund(node, ecash, mint.url, 100)
    quote = await node.custody.melt_quote(mint.url, fake_invoice(5000))

    with pytest.raises(InsufficientBalance):
        await node.custody.melt(account.account_id, mint.url, quote)


# -- a mint with input fees ----------------------------------------------------------------


async def test_fee_mint_credits_what_the_node_received(
    node: WalletService, ecash: EcashFactory, fee_mint: LocalMint
) -> None:
    token = await ecash.token(1000, mint_url=fee_mint.url, legacy=True)  # 6 proofs: fee 1
    checked = await node.mints.check_token(token)
    assert checked.fee == 1

    account = await node.create_account(checked)

    assert account.credited_msat == 999_000
    assert account.mint_url == fee_mint.url
    assert await balance(node, account.account_id) == (999_000, 0)
    received = await node.topup(
        account.account_id,
        await node.mints.check_token(await ecash.token(2, mint_url=fee_mint.url)),
    )
    assert (received.credited_msat, received.fee_sat) == (1000, 1)
    await assert_balanced(node)


async def test_fee_mint_withdrawals_charge_amount_plus_fee(
    node: WalletService, ecash: EcashFactory, fee_mint: LocalMint
) -> None:
    account = await fund(node, ecash, fee_mint.url, 1000)  # 999 kept: 512 256 128 64 32 4 2 1

    exact = await node.withdraw_token(account.account_id, 100, fee_mint.url)  # 64 + 32 + 4
    assert (exact.amount_sat, exact.fee_sat) == (100, 0)
    assert await balance(node, account.account_id) == (899_000, 0)

    swapped = await node.withdraw_token(account.account_id, 8, fee_mint.url)  # needs a swap
    assert swapped.amount_sat == 8 and swapped.fee_sat >= 1
    left = 899_000 - (8 + swapped.fee_sat) * 1000
    assert await balance(node, account.account_id) == (left, 0)
    await assert_balanced(node)

    # the recipient pays its own swap fee: 1 sat for up to 10 proofs
    assert await ecash.redeem(exact.token) == 100 - 1
    assert await ecash.redeem(swapped.token) == 8 - 1

    everything = await node.withdraw_token(account.account_id, None, fee_mint.url)
    assert (everything.amount_sat + everything.fee_sat) * 1000 == left
    assert await balance(node, account.account_id) == (0, 0)
    await assert_balanced(node)


async def test_fee_mint_melt_charges_amount_plus_all_fees(
    node: WalletService, ecash: EcashFactory, fee_mint: LocalMint
) -> None:
    account = await fund(node, ecash, fee_mint.url, 1000)
    quote = await node.custody.melt_quote(fee_mint.url, fake_invoice(200))

    result = await node.custody.melt(account.account_id, fee_mint.url, quote)

    assert result.state == "PAID" and result.amount_sat == 200
    assert 1 <= result.fee_sat <= quote.fee_reserve + 1  # routing + the input fee
    assert await balance(node, account.account_id) == ((999 - 200 - result.fee_sat) * 1000, 0)
    await assert_balanced(node)


# -- pay per request (X-Cashu) change -------------------------------------------------------


async def test_x_cashu_change_returns_the_rest_in_whole_sat(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    received = await node.redeem_for_request(await node.mints.check_token(token), 20_000)
    assert received.credited_msat == 100_000 and received.reservation_id is not None
    await node.ledger.settle(received.reservation_id, 12_345)  # the request cost 12.345 sat

    change = await node.issue_change(received.account_id)

    assert change is not None and change.amount_sat == 87 and change.fee_sat == 0
    assert await balance(node, received.account_id) == (0, 0)
    assert await node.ledger.earnings_msat() == 12_345 + 655  # sub-sat rest to the node
    again = await node.issue_change(received.account_id)  # one payment, one change token
    assert again is not None and again.token == change.token
    assert await balance(node, received.account_id) == (0, 0)
    assert await node.ledger.earnings_msat() == 12_345 + 655
    await assert_balanced(node)
    assert await ecash.redeem(change.token) == 87
    with pytest.raises(TokenAlreadyRedeemed):
        await node.redeem_for_request(await node.mints.check_token(token), 20_000)
    await assert_balanced(node)


# -- many at once ---------------------------------------------------------------------------


async def test_concurrent_receives_of_different_tokens_all_credit(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    tokens = [await ecash.token(10 + i, mint_url=mint.url) for i in range(12)]
    checked = [await node.mints.check_token(t) for t in tokens]

    accounts = await asyncio.gather(*(node.create_account(c) for c in checked))

    assert [a.credited_msat for a in accounts] == [(10 + i) * 1000 for i in range(12)]
    assert ledger_state(data_dir).total_balance_msat == sum(10 + i for i in range(12)) * 1000
    await assert_balanced(node)


async def test_concurrent_withdrawals_at_one_mint_all_succeed(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    accounts = [await fund(node, ecash, mint.url, 100) for _ in range(16)]  # 64 32 4 each

    outcomes = await asyncio.gather(
        *(node.withdraw_token(a.account_id, 50) for a in accounts), return_exceptions=True
    )

    await assert_balanced(node)  # whatever happened, nothing was lost
    failures = [o for o in outcomes if not isinstance(o, SentToken)]
    assert failures == [], f"{len(failures)} of 16 withdrawals failed: {failures[0]!r}"


async def test_a_pay_per_request_token_is_reserved_with_its_credit(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    """No moment between the credit and the request's reservation shows the balance free:
    a refund asked then would pay the change out under the running request."""
    token = await ecash.token(100, mint_url=mint.url)
    checked = await node.mints.check_token(token)
    received = await node.redeem_for_request(checked, 60_000)
    assert received.reservation_id is not None
    account = await node.ledger.account(received.account_id)
    assert (account.balance_msat, account.reserved_msat) == (40_000, 60_000)
    with pytest.raises(PaymentInFlight):
        await node.change_of(checked.token)
    await node.ledger.settle(received.reservation_id, 5_000)
    change = await node.change_of(checked.token)
    assert change is not None and change[1] == 95
    assert await ecash.redeem(change[0]) == 95

    # a credit that falls short of it holds nothing: the request is refused, the rest is change
    short = await node.mints.check_token(await ecash.token(10, mint_url=mint.url))
    refused = await node.redeem_for_request(short, 60_000)
    assert refused.reservation_id is None
    assert (await node.ledger.account(refused.account_id)).reserved_msat == 0
    await assert_balanced(node)
