"""The operator's books and earnings out (contract section 13): balances, the audit,
withdrawals, the payouts made, and QR codes for the panel's books page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import segno
from aiohttp import web

from routstr_node.admin.json_body import admin_body, admin_json
from routstr_node.books import AuditSeen, books_view, payout_view, withdrawal_answer
from routstr_node.errors import ApiError, invalid_request
from routstr_node.lightning_address import LightningAddressError
from routstr_node.payout_job import PAYOUT_JOB, pay_out
from routstr_node.state import NODE, NodeState

_NO_STORE = {"Cache-Control": "no-store"}
_MAX_KEY = 200
_QR_MAX_CHARS = 7089  # the most a QR code holds (numeric, version 40, level L)


@dataclass
class BooksState:
    """The last audit this process ran (the books show it; one runs when there is none)."""

    last_audit: AuditSeen | None = None


BOOKS = web.AppKey("books", BooksState)


def add_routes(app: web.Application) -> None:
    app[BOOKS] = BooksState()
    app.router.add_get("/admin/api/balances", balances)
    app.router.add_post("/admin/api/audit", run_audit)
    app.router.add_post("/admin/api/withdraw", withdraw)
    app.router.add_get("/admin/api/payouts", payouts)
    app.router.add_post("/admin/api/payouts/run", run_payout)
    app.router.add_post("/admin/api/qr", qr_code)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=_NO_STORE)


async def audit_now(node: NodeState, state: BooksState) -> AuditSeen:
    seen = AuditSeen.of(await node.wallet.audit())
    state.last_audit = seen
    return seen


async def balances(request: web.Request) -> web.Response:
    node, state = request.app[NODE], request.app[BOOKS]
    audit = state.last_audit or await audit_now(node, state)
    books = await node.wallet.payouts.books()
    return _json(books_view(books, node.mints, audit))


async def run_audit(request: web.Request) -> web.Response:
    return _json((await audit_now(request.app[NODE], request.app[BOOKS])).view())


async def withdraw(request: web.Request) -> web.Response:
    """`{"amount"?, "mint"?}` → a token; `{"invoice"}` → paid. Idempotency-Key: the
    same answer again, paid once."""
    body = admin_json(await admin_body(request))
    if not isinstance(body, dict):
        raise invalid_request("invalid_json", "the body must be a JSON object")
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > _MAX_KEY:
        raise invalid_request("invalid_idempotency_key", f"at most {_MAX_KEY} characters")
    mint = body.get("mint")
    if mint is not None and not isinstance(mint, str):
        raise invalid_request("invalid_mint", "'mint' must be a mint URL", param="mint")
    payouts = request.app[NODE].wallet.payouts
    if body.get("invoice") is not None:
        invoice = body["invoice"]
        if not isinstance(invoice, str) or not invoice.strip():
            raise invalid_request(
                "invalid_invoice", "'invoice' must be a bolt11 invoice", param="invoice"
            )
        if body.get("amount") is not None:
            raise invalid_request(
                "invalid_amount", "an invoice carries its own amount; omit 'amount'", param="amount"
            )
        row = await payouts.pay_invoice(invoice.strip(), mint, key)
    else:
        amount = body.get("amount")
        if amount is not None and (type(amount) is not int or amount <= 0):
            raise invalid_request(
                "invalid_amount", "'amount' must be a positive integer of sat", param="amount"
            )
        row = await payouts.withdraw_token(amount, mint, key)
    status, answer = withdrawal_answer(row)
    return _json(answer, status)


async def payouts(request: web.Request) -> web.Response:
    node = request.app[NODE]
    rows = await node.wallet.payouts.recent(50)
    job = request.app[PAYOUT_JOB]
    automatic = {
        "lightning_address": node.settings.payout.lightning_address,
        "min_sat": node.settings.payout.min_sat,
        "interval_minutes": node.settings.payout.interval_minutes,
        "last_error": job.last_error,
    }
    return _json({"payouts": [payout_view(r) for r in rows], "automatic": automatic})


async def run_payout(request: web.Request) -> web.Response:
    """The automatic payout to the Lightning address, now (the panel's "pay now")."""
    node = request.app[NODE]
    if not node.settings.payout.lightning_address:
        raise invalid_request(
            "payout_not_configured", "set [payout] lightning_address first", param="payout"
        )
    try:
        row = await pay_out(node, request.app[PAYOUT_JOB])
    except LightningAddressError as exc:
        raise ApiError(502, "upstream_error", "lightning_address_failed", exc.message) from None
    if row is None:
        return _json({"paid": False, "reason": "earnings are below min_sat"})
    status, answer = withdrawal_answer(row)
    return _json(answer, status)


async def qr_code(request: web.Request) -> web.Response:
    """`{"text"}` → `{"svg"}`, a data: URI the panel shows as an image (its CSP allows
    images from data:, nothing from elsewhere)."""
    body = admin_json(await admin_body(request))
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        raise invalid_request("invalid_text", "give the 'text' to encode", param="text")
    if len(text) > _QR_MAX_CHARS:
        raise invalid_request("text_too_long", "too long for a QR code", param="text")
    try:
        code = segno.make(text, error="l", micro=False)
    except segno.DataOverflowError:
        raise invalid_request("text_too_long", "too long for a QR code", param="text") from None
    return _json({"svg": code.svg_data_uri(scale=4, border=2)})


__all__ = ["BOOKS", "BooksState", "add_routes", "audit_now"]
