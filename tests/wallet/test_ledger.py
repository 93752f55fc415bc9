"""The ledger: reservations under concurrency, exactly-once settlement, the journal, the audit.

Accounts are funded with real ecash through the node's custody wherever the audit is
checked; the model-based test funds accounts through the ledger's own credit function
(the one custody calls) so that each example starts from a fresh account.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ecash import EcashFactory
from support.postgres import database_url_for, temporary_database
from support.wallets import LedgerRefused, fund, open_wallet, query, tamper

from routstr_node.demo.mint import LocalMint, run_local_mint
from wallet.errors import (
    AccountNotFound,
    InsufficientBalance,
    InvalidAmount,
    KeysAlreadyDelivered,
)
from wallet.keys import key_hash
from wallet.ledger import Ledger
from wallet.postgres import ledger as pg_ledger
from wallet.postgres.store import PostgresStore
from wallet.service import WalletService
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite.store import SqliteStore
from wallet.store import WalletStore

ROUTSTR_NODE = Path(sys.executable).parent / "routstr-node"


async def funded(node: WalletService, ecash: EcashFactory, mint: LocalMint, sat: int) -> int:
    return (await fund(node, ecash, mint.url, sat)).account_id


async def assert_balanced(node: WalletService) -> None:
    report = await node.audit()
    assert report.balanced, report.to_dict()


# -- reservations -------------------------------------------------------------------------


async def test_concurrent_reservations_never_overspend(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 1000)
    amount = 13_000
    seen: list[tuple[int, int]] = []

    async def observe() -> None:
        for _ in range(50):
            row = await node.ledger.account(account_id)
            seen.append((row.balance_msat, row.reserved_msat))
            await asyncio.sleep(0)

    outcomes = await asyncio.gather(
        observe(),
        *(node.ledger.reserve(account_id, amount) for _ in range(100)),
        return_exceptions=True,
    )

    reservations = [o for o in outcomes[1:] if isinstance(o, int)]
    refusals = [o for o in outcomes[1:] if not isinstance(o, int)]
    assert len(reservations) == 1_000_000 // amount == 76
    assert len(set(reservations)) == 76
    assert all(isinstance(o, InsufficientBalance) for o in refusals) and len(refusals) == 24
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (1_000_000 - 76 * amount, 76 * amount)
    assert all(b >= 0 and b + r == 1_000_000 for b, r in seen), "a reader saw money vanish"
    await assert_balanced(node)

    for i, reservation in enumerate(reservations):
        await node.ledger.settle(reservation, 1_000 if i % 2 else 0)
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (1_000_000 - 38 * 1_000, 0)
    assert await node.ledger.earnings_msat() == 38_000
    await assert_balanced(node)


async def test_settle_charges_once_and_returns_the_first_outcome(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 100)
    reservation = await node.ledger.reserve(account_id, 50_000)
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (50_000, 50_000)

    first = await node.ledger.settle(reservation, 20_000)

    assert (first.state, first.charged_msat, first.reserved_msat) == ("charged", 20_000, 50_000)
    assert first.account_id == account_id
    assert await node.ledger.settle(reservation, 40_000) == first
    assert await node.ledger.settle(reservation, 0) == first
    assert await node.ledger.release(reservation) == first
    assert await node.ledger.reservation(reservation) == first
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (80_000, 0)
    assert await node.ledger.earnings_msat() == 20_000
    await assert_balanced(node)


async def test_settle_from_many_tasks_at_once_charges_once(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 100)
    reservation = await node.ledger.reserve(account_id, 10_000)

    outcomes = await asyncio.gather(
        *(node.ledger.settle(reservation, 1_000 * (i + 1)) for i in range(10)),
        node.ledger.release(reservation),
    )

    assert len(set(outcomes)) == 1
    charged = outcomes[0].charged_msat
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (100_000 - charged, 0)
    assert await node.ledger.earnings_msat() == charged
    await assert_balanced(node)


async def test_release_returns_the_whole_reservation(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 100)
    reservation = await node.ledger.reserve(account_id, 100_000)
    with pytest.raises(InsufficientBalance) as short:
        await node.ledger.reserve(account_id, 1)
    assert (short.value.needed_msat, short.value.available_msat) == (1, 0)

    released = await node.ledger.release(reservation)

    assert (released.state, released.charged_msat) == ("released", 0)
    assert await node.ledger.settle(reservation, 5_000) == released
    row = await node.ledger.account(account_id)
    assert (row.balance_msat, row.reserved_msat) == (100_000, 0)
    assert await node.ledger.earnings_msat() == 0
    await assert_balanced(node)


async def test_a_charge_is_capped_at_its_reservation(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 100)
    reservation = await node.ledger.reserve(account_id, 10_000)

    settled = await node.ledger.settle(reservation, 99_999)

    assert settled.charged_msat == 10_000
    assert (await node.ledger.account(account_id)).balance_msat == 90_000
    assert await node.ledger.earnings_msat() == 10_000
    await assert_balanced(node)


async def test_bad_amounts_and_unknown_ids_are_refused(
    node: WalletService, ecash: EcashFactory, mint: LocalMint
) -> None:
    account_id = await funded(node, ecash, mint, 10)
    reservation = await node.ledger.reserve(account_id, 1_000)

    with pytest.raises(InvalidAmount):
        await node.ledger.reserve(account_id, -1)
    with pytest.raises(InvalidAmount):
        await node.ledger.settle(reservation, -1)
    with pytest.raises(AccountNotFound):
        await node.ledger.reserve(account_id + 1000, 1)
    with pytest.raises(AccountNotFound):
        await node.ledger.settle(reservation + 1000, 1)
    assert (await node.ledger.reservation(reservation)).state == "open"
    await assert_balanced(node)


async def test_a_restart_releases_the_reservations_of_requests_in_flight(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    async with open_wallet(data_dir, [mint.url]) as node:
        account_id = await funded(node, ecash, mint, 100)
        in_flight = await node.ledger.reserve(account_id, 40_000)
        done = await node.ledger.reserve(account_id, 10_000)
        await node.ledger.settle(done, 10_000)

    async with open_wallet(data_dir, [mint.url]) as node:
        released = await node.ledger.reservation(in_flight)
        assert (released.state, released.charged_msat) == ("released", 0)
        assert (await node.ledger.reservation(done)).charged_msat == 10_000
        row = await node.ledger.account(account_id)
        assert (row.balance_msat, row.reserved_msat) == (90_000, 0)
        assert await node.ledger.settle(in_flight, 40_000) == released  # too late to charge
        await assert_balanced(node)


async def test_a_restart_charges_what_a_stream_in_flight_had_delivered(
    data_dir: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    """The record of what was delivered only grows, never past the reservation, moves no
    money by itself, and is what the next start charges."""
    async with open_wallet(data_dir, [mint.url]) as node:
        account_id = await funded(node, ecash, mint, 100)
        streaming = await node.ledger.reserve(account_id, 40_000)
        capped = await node.ledger.reserve(account_id, 5_000)
        for delivered in (3_000, 12_000, 7_000):  # a late write of an older record
            await node.ledger.record_delivered(streaming, delivered)
        await node.ledger.record_delivered(capped, 9_000)
        row = await node.ledger.account(account_id)
        assert (row.balance_msat, row.reserved_msat) == (55_000, 45_000)

    async with open_wallet(data_dir, [mint.url]) as node:
        charged = await node.ledger.reservation(streaming)
        assert (charged.state, charged.charged_msat) == ("charged", 12_000)
        assert (await node.ledger.reservation(capped)).charged_msat == 5_000
        row = await node.ledger.account(account_id)
        assert (row.balance_msat, row.reserved_msat) == (83_000, 0)
        assert await node.ledger.earnings_msat() == 17_000
        await assert_balanced(node)


# -- the ledger against a model ----------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def bare_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ledger]:
    """A ledger database of its own, no custody: accounts are funded by ledger credits."""
    async with AsyncExitStack() as stack:
        store: WalletStore
        if request.param == "sqlite":
            store = SqliteStore(tmp_path_factory.mktemp("ledger"))
        else:
            store = PostgresStore(await stack.enter_async_context(temporary_database()))
        await store.open()
        yield Ledger(store)
        await store.close()


async def _funded(store: WalletStore, initial: int) -> int:
    """A bare account credited ``initial`` msat, in the store's own transaction."""
    if isinstance(store, SqliteStore):

        def create(c: sqlite3.Connection) -> int:
            account_id = ledger_sql.create_account(c, "key")
            if initial:
                ledger_sql.credit_from_custody(c, account_id, initial, operation_id=None)
            return account_id

        return await store.db.write(create)
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as c, c.transaction():
        account_id = await pg_ledger.create_account(c, "key")
        if initial:
            await pg_ledger.credit_from_custody(c, account_id, initial, operation_id=None)
        return account_id


async def _latest_journal(store: WalletStore, account_id: int) -> tuple[int, int]:
    sql = (
        "SELECT a.last_journal_id, (SELECT MAX(id) FROM journal WHERE account_id = a.id)"
        " FROM accounts a WHERE a.id = "
    )
    if isinstance(store, SqliteStore):
        return await store.db.read(lambda c: c.execute(sql + "?", (account_id,)).fetchone())
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as c:
        row = await c.fetchrow(sql + "$1", account_id)
        return row[0], row[1]


@dataclass
class Model:
    balance: int
    reserved: int = 0
    earnings: int = 0
    open: dict[int, int] = field(default_factory=dict)  # reservation → amount
    outcome: dict[int, tuple[int, str]] = field(default_factory=dict)  # → (charged, state)


Step = tuple[str, int, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 40_000), st.just(0)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 50_000)),
        st.tuples(st.just("release"), st.integers(0, 30), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 100_000), steps)
async def test_the_ledger_follows_a_simple_model(
    bare_ledger: Ledger, initial: int, program: list[Step]
) -> None:
    ledger = bare_ledger
    earnings_before = await ledger.earnings_msat()

    account_id = await _funded(ledger.store, initial)
    model = Model(balance=initial)
    reservations: list[int] = []

    for op, a, b in program:
        if op == "reserve":
            try:
                rid = await ledger.reserve(account_id, a)
            except InsufficientBalance:
                assert a > model.balance
                continue
            assert a <= model.balance
            reservations.append(rid)
            model.balance -= a
            model.reserved += a
            model.open[rid] = a
        elif reservations:
            rid = reservations[a % len(reservations)]
            charge = b if op == "settle" else 0
            settled = (
                await ledger.settle(rid, charge) if op == "settle" else await ledger.release(rid)
            )
            if rid in model.open:  # the first settlement decides, every later one repeats it
                amount = model.open.pop(rid)
                charged = min(charge, amount)
                model.outcome[rid] = (charged, settled.state)
                model.balance += amount - charged
                model.reserved -= amount
                model.earnings += charged
                if charged:
                    assert settled.state == "charged"
                elif charge == 0:
                    assert settled.state == "released"
            assert (settled.charged_msat, settled.state) == model.outcome[rid]
            assert settled.account_id == account_id
        row = await ledger.account(account_id)
        assert (row.balance_msat, row.reserved_msat) == (model.balance, model.reserved)
        assert await ledger.earnings_msat() - earnings_before == model.earnings

    latest = await _latest_journal(ledger.store, account_id)
    assert latest[0] == latest[1], "the account names its latest journal entry"


# -- keys lost with the answer that created the account --------------------------------------


async def test_only_an_untouched_young_account_gets_new_keys_again(node: WalletService) -> None:
    invoice = await node.create_invoice(100)  # FakeWallet: paid at once
    record = await node.invoice(invoice.invoice_id)
    account_id = record.credited_account_id
    assert account_id is not None
    first = await node.claim_invoice_keys(invoice.invoice_id, invoice.secret)
    assert first is not None

    async def reissue(created_since: int) -> object:
        new_hashes = key_hash("sk-new"), key_hash("radmin_new")
        try:
            reissued = await node.store.deliver_invoice_keys(
                invoice.invoice_id, *new_hashes, created_since
            )
        except KeysAlreadyDelivered:
            reissued = None
        node.ledger.forget_keys(account_id)
        return reissued

    assert await reissue(int(time.time()) + 5) is None, "older than the window"
    assert await node.ledger.account_id_for_key(first.api_key) == account_id
    assert await reissue(int(time.time()) - 5) is not None
    assert await node.ledger.account_id_for_key(first.api_key) is None
    assert await node.ledger.account_id_for_key("sk-new") == account_id

    await node.ledger.rotate_api_key(account_id, "sk-rotated")
    assert await reissue(0) is None, "the keys were rotated: someone holds them"
    assert await node.ledger.account_id_for_key("sk-rotated") == account_id
    await assert_balanced(node)


# -- the journal and the audit ---------------------------------------------------------------


async def test_the_journal_is_append_only(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    account_id = await funded(node, ecash, mint, 100)
    await node.ledger.settle(await node.ledger.reserve(account_id, 1_000), 1_000)

    rows = query(data_dir, "SELECT * FROM journal ORDER BY id")
    assert [r[2] for r in rows] == ["credit", "reserve", "charge"]
    for statement in (
        "UPDATE journal SET balance_delta_msat = 0, custody_delta_msat = 0",
        "UPDATE journal SET memo = 'edited' WHERE id = 1",
        "DELETE FROM journal WHERE id = 2",
        "DELETE FROM journal",
    ):
        with pytest.raises(LedgerRefused, match="append-only"):
            tamper(data_dir, statement)
    with pytest.raises(LedgerRefused):  # every row must balance
        tamper(
            data_dir,
            "INSERT INTO journal (at, kind, custody_delta_msat, balance_delta_msat)"
            " VALUES (0, 'forged', 0, 5000)",
        )
    assert query(data_dir, "SELECT * FROM journal ORDER BY id") == rows
    await assert_balanced(node)


async def test_the_journal_cannot_be_rewritten_by_replace(
    node: WalletService, ecash: EcashFactory, mint: LocalMint, data_dir: Path
) -> None:
    await funded(node, ecash, mint, 100)

    rows = query(data_dir, "SELECT * FROM journal ORDER BY id")
    replace = (
        "INSERT INTO journal (id, at, kind) VALUES (1, 0, 'forged')"
        " ON CONFLICT (id) DO UPDATE SET at = 0, kind = 'forged'"
        if database_url_for(data_dir)
        else "REPLACE INTO journal (id, at, kind) VALUES (1, 0, 'forged')"
    )
    with suppress(LedgerRefused):
        tamper(data_dir, replace)
    assert query(data_dir, "SELECT * FROM journal ORDER BY id") == rows


async def run_cli_audit(config: Path) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROUTSTR_")}
    child = await asyncio.create_subprocess_exec(
        str(ROUTSTR_NODE),
        "audit",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode is not None
    try:
        report = json.loads(out)
    except ValueError:
        pytest.fail(f"audit printed no JSON: {out!r} {err.decode()[-2000:]}")
    assert isinstance(report, dict)
    return child.returncode, report


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE accounts SET balance_msat = balance_msat + 1000",
        "UPDATE earnings SET amount_msat = amount_msat + 1000",
        "UPDATE proofs SET amount = amount * 2 WHERE id = (SELECT MIN(id) FROM proofs)",
    ],
    ids=["balance", "earnings", "proof-amount"],
)
async def test_the_audit_finds_a_tampered_ledger(
    node: WalletService,
    ecash: EcashFactory,
    mint: LocalMint,
    data_dir: Path,
    tmp_path: Path,
    statement: str,
) -> None:
    account_id = await funded(node, ecash, mint, 500)
    await node.ledger.settle(await node.ledger.reserve(account_id, 7_000), 3_000)
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{data_dir}"\n[mints]\ntrusted = ["{mint.url}"]\n'
        f'[database]\nurl = "{database_url_for(data_dir)}"\n'
    )

    clean = await node.audit()
    assert clean.balanced and clean.difference_msat == 0 and clean.journal_consistent
    code, printed = await run_cli_audit(config)  # beside the open wallet, as with a live node
    assert (code, printed["balanced"], printed["difference_msat"]) == (0, True, 0)

    tamper(data_dir, statement)

    report = await node.audit()
    assert not report.balanced
    assert report.difference_msat != 0 or not report.journal_consistent
    assert not report.journal_consistent  # every stored total is recomputed from the journal
    code, printed = await run_cli_audit(config)
    assert (code, printed["balanced"]) == (1, False)
    assert printed["difference_msat"] == report.difference_msat


async def test_an_audit_that_cannot_run_exits_2_not_1(tmp_path: Path) -> None:
    """1 means "does not balance": a monitor must tell that from a broken setup."""
    config = tmp_path / "node.toml"
    empty = tmp_path / "empty"
    config.write_text(f'[node]\ndata_dir = "{empty}"\n[mints]\ntrusted = ["http://127.0.0.1:9"]\n')
    for argv, why in (
        (["--config", str(config)], f"no wallet database in {empty}"),
        (["--config", str(tmp_path / "missing.toml")], "missing.toml: file not found"),
    ):
        child = await asyncio.create_subprocess_exec(
            str(ROUTSTR_NODE),
            "audit",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await child.communicate()
        assert child.returncode == 2, (out, err)
        assert out == b""
        assert why in err.decode()


async def test_an_audit_with_a_mint_away_shows_what_it_could_not_check(
    ecash: EcashFactory, tmp_path: Path
) -> None:
    """Not balanced (unconfirmed), but no invented difference of the whole custody."""
    data_dir = tmp_path / "node"
    async with (
        run_local_mint(tmp_path / "mint") as away,
        open_wallet(data_dir, [away.url]) as service,
    ):
        account = await fund(service, ecash, away.url, 300)
        await service.ledger.settle(await service.ledger.reserve(account.account_id, 9_000), 4_000)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{data_dir}"\n[mints]\ntrusted = ["{away.url}"]\n')

    code, printed = await run_cli_audit(config)

    assert (code, printed["balanced"], printed["difference_msat"]) == (1, False, 0)
    assert printed["unchecked_msat"] == 300_000
    assert printed["balances_msat"] + printed["earnings_msat"] == 300_000
    assert printed["mints"][away.url] == {"stored_sat": 300, "unspent_sat": 0, "unchecked_sat": 300}
    assert any("cannot check proof states" in p for p in printed["problems"])
