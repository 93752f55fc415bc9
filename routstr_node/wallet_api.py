"""The wallet API (sk- accounts): create, balance, topup, withdraw, rotate, and refunds.

Handlers only check input and call :class:`wallet.service.WalletService`; every money
movement happens there, in one transaction with its journal entry. Typed wallet and
mint failures are mapped to the contract's codes by the app's middleware
(:func:`routstr_node.errors.from_domain`); the few answers particular to withdrawals
are made here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from routstr_node import balance_api, invoice_api
from routstr_node.account_api import (
    account_of,
    balance_json,
    change_of_payment,
    json_body,
    mint_choice,
    own_admin_key,
    required_key,
    sat_amount,
    token_text,
)
from routstr_node.errors import ApiError, invalid_request
from routstr_node.payment import account_for_key
from routstr_node.state import NODE
from wallet import (
    AdminKeyTaken,
    InsufficientCustody,
    InvoiceRejected,
    PaymentFailed,
    TokenAlreadyRedeemed,
    new_api_key,
)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/wallet/create", create)
    app.router.add_get("/v1/wallet/balance", balance)
    app.router.add_post("/v1/wallet/topup", topup)
    app.router.add_post("/v1/wallet/withdraw", withdraw)
    app.router.add_get("/v1/wallet/withdrawals", withdrawals)
    app.router.add_post("/v1/wallet/refund", refund)
    app.router.add_post("/v1/wallet/rotate", rotate)
    balance_api.add_routes(app)
    invoice_api.add_routes(app)


async def create(request: web.Request) -> web.Response:
    """A new account funded by a token; its two keys are shown here.

    A create whose answer was lost is asked again with the same token: it answers the
    same keys while neither has been used (see ``WalletService.create_account``).
    """
    node = request.app[NODE]
    body = await json_body(request)
    text = token_text(body, "cashu_token")
    admin_key = own_admin_key(body.get("admin_key"))
    try:
        new = await node.wallet.create_account(await node.mints.check_token(text), admin_key)
    except AdminKeyTaken as exc:
        raise invalid_request("invalid_admin_key", exc.message, param="admin_key") from None
    return web.json_response(
        {
            "api_key": new.api_key,
            "admin_key": new.admin_key,
            "balance": new.credited_msat // 1000,
            "balance_msat": new.credited_msat,
            "mint": new.mint_url,
            "unit": "sat",
        },
        status=201,
    )


async def balance(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account_id = await account_of(request, node)
    return web.json_response(balance_json(await node.wallet.ledger.account(account_id)))


async def topup(request: web.Request) -> web.Response:
    node = request.app[NODE]
    required_key(request)
    # the token to add is checked before a token used as the key is redeemed: a refused
    # request leaves both unspent
    checked = await node.mints.check_token(token_text(await json_body(request), "cashu_token"))
    account_id = await account_of(request, node)
    try:
        received = await node.wallet.topup(account_id, checked)
    except TokenAlreadyRedeemed as exc:
        if exc.account_id != account_id:
            raise
        # a retry after a lost answer: say where the money went, still as a spent token
        raise invalid_request(
            "cashu_token_spent",
            "this token was already redeemed into this account: its value is in the balance",
        ) from None
    account = await node.wallet.ledger.account(account_id)
    return web.json_response(
        {
            "balance": account.balance_msat // 1000,
            "amount_added": received.credited_msat // 1000,
            "currency": "sat",
        }
    )


async def withdraw(request: web.Request) -> web.Response:
    """A token (``amount`` omitted: all the account can spend now), or an invoice paid."""
    node = request.app[NODE]
    account_id = await account_of(request, node)
    body = await json_body(request)
    mint = await mint_choice(node, body.get("mint"))
    if body.get("invoice") is not None:
        return await _pay_invoice(request, account_id, body, mint)
    amount = None if body.get("amount") is None else sat_amount(body["amount"])
    try:
        sent = await node.wallet.withdraw(account_id, amount, mint)
    except InsufficientCustody:
        raise _short_at_mint(mint) from None
    return web.json_response(
        {"cashu_token": sent.token, "amount": sent.amount_sat, "mint": sent.mint_url}
    )


async def withdrawals(request: web.Request) -> web.Response:
    """The account's latest withdrawn tokens, newest first: where a lost answer is found."""
    node = request.app[NODE]
    account_id = await account_of(request, node)
    listed = await node.wallet.withdrawals(account_id)
    return web.json_response(
        {
            "withdrawals": [
                {
                    "cashu_token": w.token,
                    "amount": w.amount_sat,
                    "mint": w.mint_url,
                    "created_at": w.created_at,
                }
                for w in listed
            ]
        }
    )


async def _pay_invoice(
    request: web.Request, account_id: int, body: dict[str, Any], mint: str | None
) -> web.Response:
    invoice = body["invoice"]
    if not isinstance(invoice, str) or not invoice.strip():
        raise invalid_request(
            "invalid_invoice", "'invoice' must be a bolt11 invoice", param="invoice"
        )
    if body.get("amount") is not None:
        raise invalid_request(
            "invalid_amount", "an invoice carries its own amount; omit 'amount'", param="amount"
        )
    node = request.app[NODE]
    try:
        paid = await node.wallet.withdraw_invoice(account_id, invoice.strip(), mint)
    except InvoiceRejected as exc:
        raise invalid_request("invalid_invoice", exc.message, param="invoice") from None
    except PaymentFailed as exc:
        raise ApiError(502, "upstream_error", "payment_failed", exc.message) from None
    except InsufficientCustody:
        raise _short_at_mint(mint) from None
    if paid.state != "PAID":
        # the mint has not settled it yet; recovery finishes it either way
        return web.json_response(
            {"paid": False, "pending": True, "amount": paid.amount_sat}, status=202
        )
    return web.json_response({"paid": True, "amount": paid.amount_sat, "fee": paid.fee_sat})


def _short_at_mint(mint: str | None) -> ApiError:
    where = f"at {mint}" if mint else "at any single trusted mint"
    return ApiError(
        409,
        "invalid_request_error",
        "insufficient_mint_liquidity",
        f"the node holds too little {where} to pay this out now;"
        " ask for a smaller amount or another trusted mint",
        param="mint",
    )


async def refund(request: web.Request) -> web.Response:
    """The change of an X-Cashu payment; always the same token for the same payment."""
    text = request.headers.get("X-Cashu", "").strip()
    if not text:
        raise invalid_request("cashu_token_missing", "send the original token in X-Cashu")
    token, amount = await change_of_payment(request.app[NODE], text)
    return web.json_response({"cashu_token": token, "amount": amount})


async def rotate(request: web.Request) -> web.Response:
    """A new sk- key for the account (admin key only); the old one stops working at once."""
    node = request.app[NODE]
    key = required_key(request)
    account_id = await account_for_key(node, key)
    if await node.wallet.ledger.account_by_admin_key(key) is None:
        raise ApiError(
            403,
            "permission_error",
            "admin_key_required",
            "rotating the API key needs the account's admin key (radmin_… or your own)",
        )
    new_key = new_api_key()
    await node.wallet.ledger.rotate_api_key(account_id, new_key)
    return web.json_response({"api_key": new_key})
