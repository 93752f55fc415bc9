"""``routstr-node earnings``: the books as JSON, and ``earnings withdraw`` paying out.

The books are read from the database as the audit is, beside a running node. A payout
is asked of the running node (its admin API, with the key it wrote into data_dir at
start: see :mod:`routstr_node.admin.local_key`); only when no node runs on this
data_dir does the command pay itself, after finishing what the last run left pending.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from mints.directory import MintDirectory
from routstr_node.admin.local_key import node_runs, read_local_key
from routstr_node.admin.signin import SESSION_COOKIE
from routstr_node.audit_command import NoLedger
from routstr_node.books import AuditSeen, books_view, withdrawal_answer
from routstr_node.config import Settings
from routstr_node.errors import from_domain
from wallet import DB_FILE, WalletService

_ANY_ADDRESS = ("0.0.0.0", "::", "")
_TIMEOUT = aiohttp.ClientTimeout(total=120)


class NodeUnreachable(Exception):
    """A node runs on this data_dir, but not where node.toml says: nothing is paid (this
    command must not pay beside it)."""


class Refused(Exception):
    """The payout was refused or failed; the contract's error envelope."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "refused"))
        self.status = status
        self.error = error


def _wallet(settings: Settings) -> tuple[WalletService, MintDirectory]:
    url = settings.database.url
    if not url and not (settings.node.data_dir / DB_FILE).exists():
        raise NoLedger(f"no wallet database in {settings.node.data_dir}")
    mints = MintDirectory(list(settings.mints.trusted), timeout_s=settings.mints.timeout_s)
    return WalletService(settings.node.data_dir, mints, url), mints


async def show_books(settings: Settings) -> dict[str, Any]:
    wallet, mints = _wallet(settings)
    try:
        await wallet.open(recover=False)
        audit = AuditSeen.of(await wallet.audit())
        return books_view(await wallet.payouts.books(), mints, audit)
    finally:
        await wallet.close()
        await mints.close()


async def withdraw(
    settings: Settings,
    amount: int | None,
    invoice: str | None,
    mint: str | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if invoice is not None:
        body["invoice"] = invoice
    if amount is not None:
        body["amount"] = amount
    if mint is not None:
        body["mint"] = mint
    answer = await _ask_running_node(settings, body, idempotency_key)
    if answer is not None:
        return answer
    return await _pay_here(settings, body, idempotency_key)


def _node_url(settings: Settings) -> str:
    host = settings.node.host
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.node.port}"


async def _ask_running_node(
    settings: Settings, body: dict[str, Any], key: str | None
) -> dict[str, Any] | None:
    """The running node's answer; None when no node runs on this data_dir."""
    data_dir = settings.node.data_dir
    local_key = read_local_key(data_dir)
    if local_key is None or not node_runs(data_dir):
        return None  # none runs (a key left by a node that was killed holds no lock)
    headers = {"Cookie": f"{SESSION_COOKIE}={local_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    url = _node_url(settings) + "/admin/api/withdraw"
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        try:
            async with session.post(url, json=body, headers=headers) as response:
                answer = json.loads(await response.read())
                status = response.status
        except aiohttp.ClientConnectionError:
            raise NodeUnreachable(
                f"a node runs on {data_dir} but does not answer at {url}: run this command"
                " with the node.toml it runs with"
            ) from None
    if status == 401:
        raise NodeUnreachable(f"the node at {url} is not the one that runs on {data_dir}")
    if status >= 400:
        raise Refused(status, answer.get("error", {}))
    result: dict[str, Any] = answer
    return result


async def _pay_here(settings: Settings, body: dict[str, Any], key: str | None) -> dict[str, Any]:
    wallet, mints = _wallet(settings)
    try:
        await wallet.open(recover=True)  # what the last run left pending, first
        try:
            if "invoice" in body:
                row = await wallet.payouts.pay_invoice(body["invoice"], body.get("mint"), key)
            else:
                row = await wallet.payouts.withdraw_token(body.get("amount"), body.get("mint"), key)
        except Exception as exc:
            error = from_domain(exc)
            if error is None:
                raise
            raise Refused(error.status, error.body()["error"]) from None
        return withdrawal_answer(row)[1]
    finally:
        await wallet.close()
        await mints.close()
