"""An account on a node as its client sees it over HTTP: funded, its balance once nothing is
held, its withdrawals (what the custody tests check after every fault)."""

from __future__ import annotations

from typing import Any

from support.e2e import get, post
from support.ecash import EcashFactory


async def funded_auth(
    node_url: str, ecash: EcashFactory, mint_url: str, sat: int
) -> dict[str, str]:
    """The Authorization header of a new account holding ``sat``."""
    token = await ecash.token(sat, mint_url=mint_url)
    created = await post(f"{node_url}/v1/wallet/create", {"cashu_token": token})
    assert created.status == 201, created.raw
    return {"Authorization": f"Bearer {created.body['api_key']}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def balance_of(node_url: str, auth: dict[str, str]) -> dict[str, Any]:
    answer = await get(f"{node_url}/v1/wallet/balance", auth)
    assert answer.status == 200, answer.raw
    body: dict[str, Any] = answer.body
    return body


async def settled_balance(node_url: str, auth: dict[str, str]) -> dict[str, Any] | None:
    """The balance once nothing of it is held for an operation (None while something is)."""
    seen = await balance_of(node_url, auth)
    return seen if seen["reserved_msat"] == 0 else None


async def listed_withdrawals(node_url: str, auth: dict[str, str]) -> list[dict[str, Any]] | None:
    """The account's withdrawn tokens, newest first (None while there is none)."""
    answer = await get(f"{node_url}/v1/wallet/withdrawals", auth)
    listed: list[dict[str, Any]] = answer.body["withdrawals"]
    return listed or None
