"""Routstr's balance routes, in Routstr's dialect (msat amounts), so its clients work unchanged.

Routstr treats a Cashu token sent as the Bearer key as an account of its own; these
routes do too, as the paid routes do. Refunds never come from a cache keyed by the
caller: each one pays out what the account holds now (see
:meth:`wallet.service.WalletService.refund` for the one safe retry).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from routstr_node.account_api import (
    account_of_bearer,
    change_of_payment,
    json_body,
    required_key,
    token_text,
)
from routstr_node.state import NODE


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/balance/create", create)
    app.router.add_get("/v1/balance/create", create)
    app.router.add_get("/v1/balance/info", info)
    app.router.add_post("/v1/balance/topup", topup)
    app.router.add_post("/v1/balance/refund", refund)


async def _values(request: web.Request) -> dict[str, Any]:
    """Query parameters, overridden by the JSON body (Routstr accepts either)."""
    values: dict[str, Any] = dict(request.query)
    if request.method == "POST":
        values.update(await json_body(request))
    return values


async def create(request: web.Request) -> web.Response:
    node = request.app[NODE]
    text = token_text(await _values(request), "initial_balance_token", "cashu_token")
    new = await node.wallet.create_account(await node.mints.check_token(text))
    return web.json_response({"api_key": new.api_key, "balance": new.credited_msat})


async def info(request: web.Request) -> web.Response:
    """The node keeps only key hashes, so ``api_key`` is the key the caller presented."""
    node = request.app[NODE]
    account_id, key = await account_of_bearer(request, node, redeem=True)
    account = await node.wallet.ledger.account(account_id)
    return web.json_response(
        {"api_key": key, "balance": account.balance_msat, "reserved": account.reserved_msat}
    )


async def topup(request: web.Request) -> web.Response:
    node = request.app[NODE]
    required_key(request)
    # the token to add is checked before a token used as the key is redeemed: a refused
    # request leaves both unspent
    checked = await node.mints.check_token(token_text(await _values(request), "cashu_token"))
    account_id, _ = await account_of_bearer(request, node, redeem=True)
    received = await node.wallet.topup(account_id, checked)
    return web.json_response({"msats": received.credited_msat})


async def refund(request: web.Request) -> web.Response:
    """``X-Cashu``: the change of that payment. Bearer: everything the account can spend."""
    node = request.app[NODE]
    x_cashu = request.headers.get("X-Cashu", "").strip()
    if x_cashu:
        token, amount = await change_of_payment(node, x_cashu)
        return web.json_response({"token": token, "sats": str(amount)})
    account_id, key = await account_of_bearer(request, node, redeem=False)
    legacy = key.startswith(("cashuA", "cashu:cashuA"))
    sent = await node.wallet.refund(account_id, legacy=legacy)
    return web.json_response({"token": sent.token, "sats": str(sent.amount_sat)})
