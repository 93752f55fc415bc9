"""Who pays for a request: an sk- account, a token used as a key, or an X-Cashu token.

A token is checked locally (format, unit, trusted mint, value after the mint's fee
against the most the request can cost) before it is redeemed, so a token the node
refuses stays unspent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web
from cashu.core.nuts.nut18 import PaymentRequest

from mints.directory import CheckedToken
from mints.token import looks_like_token, parse_token
from routstr_node.errors import ApiError, invalid_request, unauthorized
from routstr_node.state import NodeState
from wallet import TokenAlreadyRedeemed


class PaymentMode(StrEnum):
    ACCOUNT = "account"  # an sk- key
    TOKEN = "token"  # a Cashu token used as the key
    XCASHU = "xcashu"  # the X-Cashu header: this request only, the rest is change


@dataclass(frozen=True, slots=True)
class Payer:
    account_id: int
    mode: PaymentMode
    legacy: bool = False  # the X-Cashu token was cashuA: change comes back as cashuA
    reservation_id: int | None = None  # X-Cashu: held with the token's credit


def payment_required(
    node: NodeState,
    needed_msat: int,
    message: str,
    *,
    code: str = "payment_required",
    fee_sat: int = 0,
) -> ApiError:
    """402 with a NUT-18 payment request for what this request needs (NUT-24): in sat,
    rounded up, plus the input fee the listed mints charge for a token of that size (at
    least ``fee_sat``, what the token just refused was charged)."""
    needed_sat = max(1, -(-needed_msat // 1000))
    amount_sat = max(node.mints.payable_anywhere(needed_sat), needed_sat + fee_sat)
    request = PaymentRequest(
        a=amount_sat,
        u="sat",
        s=True,
        m=list(node.mints.urls),
        d=f"{node.settings.node.name}: payment for this request",
    )
    return ApiError(
        402,
        "insufficient_quota",
        code,
        message,
        headers={"X-Cashu": str(request.serialize())},
    )


def presented_key(request: web.Request) -> str | None:
    """The credential in ``Authorization: Bearer …`` or ``X-API-Key``."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        value = auth[7:].strip()
        if value:
            return value
    value = request.headers.get("X-API-Key", "").strip()
    return value or None


async def key_account(node: NodeState, key: str) -> int | None:
    """The account an sk- key or an admin key (radmin_…, or the client's own) opens, if
    any (remembered once found)."""
    if looks_like_token(key):
        return None
    return await node.wallet.ledger.account_id_for_key(key)


async def account_for_key(node: NodeState, key: str) -> int:
    """The account an sk- or radmin_ key opens; 401 when none."""
    account_id = await key_account(node, key)
    if account_id is None:
        if looks_like_token(key):
            raise unauthorized(
                "invalid_api_key",
                "a Cashu token is not an sk- key: a token used as a key has its balance"
                " at /v1/balance/info and /v1/balance/refund",
            )
        raise unauthorized("invalid_api_key", "the API key is not valid")
    return account_id


@dataclass(frozen=True, slots=True)
class Credential:
    """What a paid request presents, read once: by the rate limit first, then to pay."""

    text: str | None  # the X-Cashu token, or the key (None: nothing presented)
    x_cashu: bool = False
    is_token: bool = False  # a Cashu token (as X-Cashu or as the key)
    account_id: int | None = None  # an sk-/radmin_ key's account (None: no such key)


_CREDENTIAL: web.RequestKey[Credential] = web.RequestKey("credential")


async def presented_credential(request: web.Request, node: NodeState) -> Credential:
    """The request's credential, an sk- key's account looked up (once per request)."""
    found: Credential | None = request.get(_CREDENTIAL)
    if found is not None:
        return found
    x_cashu = request.headers.get("X-Cashu", "").strip()
    text = x_cashu or presented_key(request)
    if text is None:
        credential = Credential(None)
    elif x_cashu or looks_like_token(text):
        credential = Credential(text, x_cashu=bool(x_cashu), is_token=True)
    else:
        credential = Credential(text, account_id=await key_account(node, text))
    request[_CREDENTIAL] = credential
    return credential


async def resolve_payer(request: web.Request, node: NodeState, max_cost_msat: int) -> Payer:
    credential = await presented_credential(request, node)
    key = credential.text
    if credential.x_cashu:
        assert key is not None
        return await _pay_per_request(node, key, max_cost_msat)
    if key is None:
        raise payment_required(
            node,
            max_cost_msat,
            "this request needs payment: an sk- key, a Cashu token as the key, or X-Cashu",
        )
    if credential.is_token:
        return Payer(await _token_as_key(node, key, max_cost_msat), PaymentMode.TOKEN)
    if credential.account_id is None:
        await account_for_key(node, key)  # raises: the contract's answer for a bad key
    assert credential.account_id is not None
    return Payer(credential.account_id, PaymentMode.ACCOUNT)


async def _checked_for(node: NodeState, text: str, max_cost_msat: int) -> CheckedToken:
    """A token that can pay for this request, checked before it is redeemed: one too
    small is refused with a 402 asking for enough, and stays the client's."""
    checked = await node.mints.check_token(text)
    if checked.value_after_fee * 1000 < max_cost_msat:
        raise payment_required(
            node,
            max_cost_msat,
            f"the token is worth {checked.value_after_fee} sat after the mint's fee;"
            f" this request may cost up to {-(-max_cost_msat // 1000)} sat",
            fee_sat=checked.fee,
        )
    return checked


async def _pay_per_request(node: NodeState, text: str, max_cost_msat: int) -> Payer:
    checked = await _checked_for(node, text, max_cost_msat)
    try:
        received = await node.wallet.redeem_for_request(checked, max_cost_msat)
    except TokenAlreadyRedeemed as exc:
        if exc.account_id is None:
            raise
        if (await node.wallet.ledger.account(exc.account_id)).kind != "xcashu":
            raise
        # most likely the same request again after its answer was lost
        raise invalid_request(
            "cashu_token_spent",
            "this token already paid for a request here; its change is at"
            " POST /v1/wallet/refund with the same token in X-Cashu (once that request ended)",
        ) from None
    return Payer(
        received.account_id,
        PaymentMode.XCASHU,
        legacy=text.lstrip().startswith(("cashuA", "cashu:cashuA")),
        reservation_id=received.reservation_id,
    )


async def _token_as_key(node: NodeState, text: str, max_cost_msat: int) -> int:
    """The token's account; on first use the token must cover this request to be redeemed
    (later uses spend what is left, and a shortfall is 402 insufficient_balance)."""
    token = parse_token(text)
    existing = await node.wallet.ledger.account_id_for_token(token)
    if existing is not None:
        return existing
    return await node.wallet.redeem_as_key(await _checked_for(node, text, max_cost_msat))
