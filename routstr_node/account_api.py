"""What every account route needs: the JSON body, the caller's account, checked amounts.

Shared by the wallet API, its Routstr aliases and the invoice routes so that a missing
key, a bad amount or a bad body gets the same answer everywhere.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mints.token import looks_like_token, normalize_mint_url, parse_token
from routstr_node.errors import invalid_request, not_found, unauthorized
from routstr_node.payment import account_for_key, presented_key
from routstr_node.request_body import parse_json_object, read_body
from routstr_node.state import NODE, NodeState
from wallet import API_KEY_PREFIX, MAX_INVOICE_SAT, AccountRow


async def json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an empty object."""
    limits = request.app[NODE].settings.limits
    raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    return parse_json_object(raw) if raw.strip() else {}


def required_key(request: web.Request) -> str:
    key = presented_key(request)
    if key is None:
        raise unauthorized(
            "missing_api_key", "send your key as 'Authorization: Bearer sk-…' or 'X-API-Key'"
        )
    return key


async def account_of(request: web.Request, node: NodeState) -> int:
    """The account of the key the caller presents: an sk- key, its admin key, or a Cashu
    token used as the key (redeemed on first use, as on the paid routes); 401 otherwise."""
    account_id, _ = await account_of_bearer(request, node, redeem=True)
    return account_id


async def account_of_bearer(
    request: web.Request, node: NodeState, *, redeem: bool
) -> tuple[int, str]:
    """Routstr's notion of a key: an sk- or admin key, or a Cashu token used as the key.

    With ``redeem`` a token seen for the first time is redeemed into its account, as on
    the paid routes; without, it is refused (a token whose redeem is unresolved is
    resolved first, and is 409 while the mint has not said). Returns the account and the
    key as presented.
    """
    key = required_key(request)
    if not looks_like_token(key):
        return await account_for_key(node, key), key
    token = parse_token(key)
    existing = await node.wallet.ledger.account_for_token(token)
    if existing is None and not redeem:
        await node.wallet.settle_pending_redeem(token)
        existing = await node.wallet.ledger.account_for_token(token)
    if existing is not None and existing.kind == "token":
        return existing.id, key
    if existing is not None or not redeem:
        raise unauthorized("invalid_api_key", "this token is not an account key here")
    checked = await node.mints.check_token(key)
    return await node.wallet.redeem_as_key(checked), key


async def change_of_payment(node: NodeState, text: str) -> tuple[str, int]:
    """The change token (and its sat) of the X-Cashu payment made with this token."""
    token = parse_token(text)
    change = await node.wallet.change_of(token)
    if change is not None:
        return change
    if await node.wallet.ledger.account_id_for_token(token) is not None:
        raise not_found(
            "not_found",
            "this token paid here as a key, not as X-Cashu: what is left of it is withdrawn"
            " with the token as the key, at POST /v1/balance/refund",
        )
    raise not_found("not_found", "this token never paid for a request here")


def sat_amount(value: Any, *, param: str = "amount", maximum: int = MAX_INVOICE_SAT) -> int:
    """A positive integer of sat (JSON true/false and 1.0 are not integers here)."""
    if type(value) is not int or value <= 0:
        raise invalid_request(
            "invalid_amount", f"'{param}' must be a positive integer of sat", param=param
        )
    if value > maximum:
        raise invalid_request(
            "invalid_amount", f"'{param}' must be at most {maximum} sat", param=param
        )
    return value


ADMIN_KEY_MIN_CHARS = 16
ADMIN_KEY_MAX_CHARS = 256


def own_admin_key(value: Any) -> str | None:
    """A client's own admin key for a new account (None: the node makes one): at least
    16 printable characters without spaces (it travels in a header), and not a form
    the node gives other meanings (an sk- key, a Cashu token)."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not ADMIN_KEY_MIN_CHARS <= len(value) <= ADMIN_KEY_MAX_CHARS
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise invalid_request(
            "invalid_admin_key",
            f"'admin_key' must be {ADMIN_KEY_MIN_CHARS} to {ADMIN_KEY_MAX_CHARS} printable"
            " ASCII characters without spaces",
            param="admin_key",
        )
    if value.startswith(API_KEY_PREFIX) or looks_like_token(value):
        raise invalid_request(
            "invalid_admin_key",
            "'admin_key' must not look like an sk- key or a Cashu token",
            param="admin_key",
        )
    return value


def token_text(values: dict[str, Any], *names: str) -> str:
    """The Cashu token under the first of ``names`` present; 400 when none is."""
    for name in names:
        value = values.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise invalid_request(
                "cashu_token_invalid", f"'{name}' must be a Cashu token string", param=name
            )
        return value.strip()
    raise invalid_request("cashu_token_missing", f"send the token as '{names[0]}'", param=names[0])


async def mint_choice(node: NodeState, value: Any) -> str | None:
    """The mint a caller names to be paid from (None: let the node choose): a trusted
    one, or one no longer trusted where the node still holds ecash."""
    if value is None:
        return None
    payout_mints = await node.wallet.payout_mints()
    if not isinstance(value, str) or normalize_mint_url(value) not in payout_mints:
        raise invalid_request(
            "cashu_mint_untrusted",
            f"the mint must be one this node pays out from: {', '.join(payout_mints)}",
            param="mint",
        )
    return value


def balance_json(account: AccountRow) -> dict[str, Any]:
    """The contract's sat view of an account: spendable now and held for requests."""
    return {
        "balance": account.balance_msat // 1000,
        "balance_msat": account.balance_msat,
        "reserved": -(-account.reserved_msat // 1000),
        "reserved_msat": account.reserved_msat,
        "currency": "sat",
    }
