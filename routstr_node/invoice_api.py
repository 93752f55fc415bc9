"""Lightning in: an invoice from the primary mint that, once paid, funds an account.

``POST /v1/wallet/invoice`` with a key tops that account up; without one it will create
a new account. The answer carries the invoice's id and, once, its secret. The state is
public to whoever knows the id; the new account's keys are handed over once, to the
caller of ``GET /v1/wallet/invoice/{id}`` who sends the secret in ``X-Invoice-Secret``
(a header, never the URL, so it stays out of logs and histories).

Paid invoices are minted when someone asks for their state and by a background poller,
so a top-up lands even if nobody looks.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from mints.errors import MintError, MintRefused
from routstr_node.account_api import account_of, json_body, sat_amount
from routstr_node.background import every
from routstr_node.errors import invalid_request, not_found, unauthorized
from routstr_node.payment import presented_key
from routstr_node.state import NODE, NodeState
from wallet import InvoiceNotFound, InvoiceRecord, InvoiceSecretInvalid, KeysAlreadyDelivered

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Invoice-Secret"
POLL_INTERVAL_S = 2.0


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/wallet/invoice", create_invoice)
    app.router.add_get("/v1/wallet/invoice/{invoice_id}", invoice_state)
    # paid invoices are minted also when nobody asks
    app.cleanup_ctx.append(every(POLL_INTERVAL_S, "invoice-poller", _poll_invoices))


async def create_invoice(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await json_body(request)
    if "amount" not in body:
        raise invalid_request(
            "invalid_amount", "send the amount in sat as 'amount'", param="amount"
        )
    amount = sat_amount(body["amount"])
    account_id = await account_of(request, node) if presented_key(request) else None
    try:
        new = await node.wallet.create_invoice(amount, account_id)
    except MintRefused as exc:
        raise invalid_request(
            "invoice_refused",
            f"the mint will not issue this invoice: {exc.detail or exc.message}",
            param="amount",
        ) from None
    return web.json_response(
        {
            "invoice_id": new.invoice_id,
            "secret": new.secret,
            "bolt11": new.bolt11,
            "amount": new.amount_sat,
            "mint": new.mint_url,
            "mode": new.mode,
            "state": "unpaid",
            "expires_at": new.expires_at,
        },
        status=201,
    )


async def invoice_state(request: web.Request) -> web.Response:
    """The state; with the right secret, a new account's keys (once)."""
    node = request.app[NODE]
    invoice_id = request.match_info["invoice_id"]
    secret = request.headers.get(SECRET_HEADER, "").strip()
    try:
        try:
            record = await node.wallet.invoice(invoice_id)
        except MintError as exc:  # the mint is away: answer with what the node knows
            log.info("invoice %s not refreshed: %s", invoice_id, exc.message)
            record = await node.wallet.invoice(invoice_id, refresh=False)
    except InvoiceNotFound:
        raise not_found("not_found", "no such invoice") from None
    payload = _invoice_json(record)
    if not secret:
        return web.json_response(payload)
    try:
        keys = await node.wallet.claim_invoice_keys(invoice_id, secret)
    except InvoiceSecretInvalid:
        raise unauthorized("invalid_invoice_secret", "the invoice secret is not valid") from None
    except KeysAlreadyDelivered:
        payload["keys_delivered"] = True
        keys = None
    if keys is not None:
        payload.update(
            {
                "keys_delivered": True,
                "api_key": keys.api_key,
                "admin_key": keys.admin_key,
                "balance": keys.balance_msat // 1000,
                "balance_msat": keys.balance_msat,
                "unit": "sat",
            }
        )
    return web.json_response(payload)


def _invoice_json(record: InvoiceRecord) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "invoice_id": record.id,
        "state": record.public_state,
        "amount": record.amount_sat,
        "bolt11": record.bolt11,
        "mint": record.mint_url,
        "mode": record.mode,
        "expires_at": record.expires_at,
        "paid_at": record.paid_at,
    }
    if record.state == "paid" and record.credited_msat is not None:
        payload["amount_added"] = record.credited_msat // 1000
    if record.mode == "create":
        payload["keys_delivered"] = record.keys_delivered
    return payload


async def _poll_invoices(node: NodeState) -> None:
    await node.wallet.poll_invoices()
