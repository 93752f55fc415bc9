"""Lightning in (NUT-04) inside the wallet: invoices, minting, keys once, and recovery.

Lost answers and crashes are staged by wrapping the mint client: the mint operation is
always written down before it is sent, so the node must finish it from the quote's
state (restore when ISSUED, the same outputs again when PAID) and credit exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support.crash import crash_at
from support.ecash import EcashFactory
from support.wallets import fund, ledger_state, open_wallet, query

from mints.client import MintClient
from mints.errors import MintUnreachable
from mints.models import BlindedMessage, BlindSignature
from routstr_node.demo.mint import LocalMint
from wallet.errors import InvoiceSecretInvalid, KeysAlreadyDelivered
from wallet.service import WalletService


def _wrap_mint(
    monkeypatch: pytest.MonkeyPatch,
    client: MintClient,
    *,
    send: bool,
) -> list[int]:
    """The mint call fails on its way back (``send``) or before it leaves; counts calls."""
    real: Callable[[str, list[BlindedMessage]], Awaitable[list[BlindSignature]]] = client.mint
    calls: list[int] = []

    async def lossy(quote_id: str, outputs: list[BlindedMessage]) -> list[BlindSignature]:
        calls.append(1)
        if len(calls) == 1:
            if send:
                await real(quote_id, outputs)
            raise MintUnreachable("connection reset")
        return await real(quote_id, outputs)

    monkeypatch.setattr(client, "mint", lossy)
    return calls


async def test_paid_invoice_creates_an_account_whose_keys_go_to_the_secret_once(
    node: WalletService, data_dir: Path
) -> None:
    invoice = await node.create_invoice(640)
    assert invoice.mode == "create" and invoice.amount_sat == 640
    stored = query(
        data_dir, "SELECT secret_hash, state FROM invoices WHERE id = ?", [invoice.invoice_id]
    )
    assert stored[0][1] == "unpaid"
    assert invoice.secret not in stored[0][0]  # only the hash is kept

    record = await node.invoice(invoice.invoice_id)
    assert record.state == "paid" and record.credited_msat == 640_000
    assert record.credited_account_id is not None

    with pytest.raises(InvoiceSecretInvalid):
        await node.claim_invoice_keys(invoice.invoice_id, "invsec_wrong")
    keys = await node.claim_invoice_keys(invoice.invoice_id, invoice.secret)
    assert keys is not None
    assert keys.balance_msat == 640_000
    account = await node.ledger.account_by_api_key(keys.api_key)
    assert account is not None and account.id == record.credited_account_id
    admin = await node.ledger.account_by_admin_key(keys.admin_key)
    assert admin is not None and admin.id == account.id
    # asked again while the account is untouched: new keys, the first ones forgotten
    again = await node.claim_invoice_keys(invoice.invoice_id, invoice.secret)
    assert again is not None and again.account_id == account.id
    assert await node.ledger.account_id_for_key(keys.api_key) is None
    assert await node.ledger.account_id_for_key(again.admin_key) == account.id
    await node.ledger.release(await node.ledger.reserve(account.id, 1_000))
    with pytest.raises(KeysAlreadyDelivered):  # used since: the keys are the holder's
        await node.claim_invoice_keys(invoice.invoice_id, invoice.secret)
    rows = query(data_dir, "SELECT key_hash FROM accounts WHERE id = ?", [account.id])
    assert again.api_key not in rows[0][0]

    # refreshing a paid invoice changes nothing
    assert (await node.invoice(invoice.invoice_id)).credited_msat == 640_000
    assert ledger_state(data_dir).total_balance_msat == 640_000
    assert (await node.audit()).balanced


async def test_topup_invoice_credits_the_account_once(
    node: WalletService, data_dir: Path, mint: LocalMint, ecash: EcashFactory
) -> None:
    account = await fund(node, ecash, mint.url, 100)
    invoice = await node.create_invoice(250, account.account_id)
    assert invoice.mode == "topup"
    assert await node.poll_invoices() == 1
    assert (await node.ledger.account(account.account_id)).balance_msat == 350_000
    assert await node.poll_invoices() == 0
    assert (await node.invoice(invoice.invoice_id)).state == "paid"
    assert await node.claim_invoice_keys(invoice.invoice_id, invoice.secret) is None
    assert (await node.ledger.account(account.account_id)).balance_msat == 350_000
    ops = query(data_dir, "SELECT kind, state FROM operations WHERE kind = 'mint'")
    assert ops == [("mint", "done")]
    assert (await node.audit()).balanced


@pytest.mark.parametrize("sent", [True, False], ids=["answer-lost", "never-sent"])
async def test_a_lost_mint_answer_is_resolved_at_once(
    node: WalletService, data_dir: Path, monkeypatch: pytest.MonkeyPatch, sent: bool
) -> None:
    calls = _wrap_mint(monkeypatch, node.mints.primary, send=sent)
    invoice = await node.create_invoice(300)
    record = await node.invoice(invoice.invoice_id)
    assert record.state == "paid" and record.credited_msat == 300_000
    # lost on the way back: restored (NUT-09); never sent: the same outputs sent again
    assert len(calls) == (1 if sent else 2)
    assert ledger_state(data_dir).total_balance_msat == 300_000
    assert (await node.audit()).balanced


@pytest.mark.parametrize("point", ["mint:written", "mint:minted"])
async def test_a_mint_interrupted_by_a_crash_is_finished_at_start(
    data_dir: Path, mint: LocalMint, point: str
) -> None:
    """Killed before or after the mint call: the same outputs again (PAID) or restored
    (ISSUED), credited once, and the keys go to the secret's holder."""
    lines = await crash_at(point, data_dir, mint.url, "invoice", "128")
    [invoice] = [line for line in lines if "invoice_id" in line]
    state = query(data_dir, "SELECT state FROM operations WHERE kind = 'mint'")
    assert state == [("pending",)]

    async with open_wallet(data_dir, [mint.url]) as second:
        record = await second.invoice(invoice["invoice_id"], refresh=False)
        assert record.state == "paid" and record.credited_msat == 128_000
        keys = await second.claim_invoice_keys(invoice["invoice_id"], invoice["secret"])
        assert keys is not None and keys.balance_msat == 128_000
        assert (await second.audit()).balanced
    assert query(data_dir, "SELECT state FROM operations WHERE kind = 'mint'") == [("done",)]


async def test_invoice_amounts_are_checked(node: WalletService) -> None:
    from wallet.errors import AccountNotFound, InvalidAmount

    bad: list[Any] = [0, -1, 1.5, True, "3", 10**20]
    for amount in bad:
        with pytest.raises(InvalidAmount):
            await node.create_invoice(amount)
    with pytest.raises(AccountNotFound):
        await node.create_invoice(10, 999_999)
    assert (await node.audit()).balanced
