"""The wallet API (sk- accounts) and X-Cashu refunds."""

from __future__ import annotations

from aiohttp import web

from mints.token import parse_token
from routstr_node.errors import invalid_request, not_found
from routstr_node.state import NODE


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/wallet/refund", refund)


async def refund(request: web.Request) -> web.Response:
    """The change of an X-Cashu payment; always the same token for the same payment."""
    text = request.headers.get("X-Cashu", "").strip()
    if not text:
        raise invalid_request("cashu_token_missing", "send the original token in X-Cashu")
    node = request.app[NODE]
    change = await node.wallet.change_of(parse_token(text).token_id)
    if change is None:
        raise not_found("not_found", "this token never paid for a request here")
    token, amount = change
    return web.json_response({"cashu_token": token, "amount": amount})
