"""An invoice from a Lightning address (LNURL-pay, LUD-06 and LUD-16), checked before
anything pays it: it must be for exactly the amount that was asked."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import bolt11

from wallet import InvoiceAmountMismatch, WalletError

_ADDRESS = re.compile(r"([a-z0-9._+-]+)@([a-z0-9-]+(?:\.[a-z0-9-]+)+)", re.IGNORECASE)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_TIMEOUT = aiohttp.ClientTimeout(total=20)
_MAX_ANSWER = 64 * 1024


class LightningAddressError(WalletError):
    """The Lightning address did not give a usable invoice; nothing was paid."""


def lnurlp_url(address: str) -> str:
    """``name@domain`` → ``https://domain/.well-known/lnurlp/name``; an LNURL-pay URL as
    it is (``https://``, or ``http://`` on this machine only)."""
    found = _ADDRESS.fullmatch(address.strip())
    if found is not None:
        return f"https://{found.group(2).lower()}/.well-known/lnurlp/{found.group(1)}"
    _allowed(address)
    return address


def _allowed(url: str) -> None:
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or local):
        raise LightningAddressError(f"not an https URL (http only on this machine): {url}")


async def _get_json(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    try:
        async with session.get(
            url, params=params, timeout=_TIMEOUT, allow_redirects=False
        ) as response:
            raw = await response.content.read(_MAX_ANSWER + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LightningAddressError(f"{url} could not be reached: {type(exc).__name__}") from None
    if len(raw) > _MAX_ANSWER:
        raise LightningAddressError(f"{url} answered more than {_MAX_ANSWER} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise LightningAddressError(f"{url} answered {status} without JSON") from None
    if not isinstance(body, dict):
        raise LightningAddressError(f"{url} answered JSON that is not an object")
    if str(body.get("status", "")).upper() == "ERROR":
        raise LightningAddressError(f"{url}: {str(body.get('reason', 'error'))[:200]}")
    if status != 200:
        raise LightningAddressError(f"{url} answered {status}")
    return body


async def invoice_for(session: aiohttp.ClientSession, address: str, amount_sat: int) -> str:
    """A bolt11 invoice of exactly ``amount_sat`` from the address's LNURL-pay service."""
    url = lnurlp_url(address)
    params = await _get_json(session, url)
    if params.get("tag") != "payRequest":
        raise LightningAddressError(f"{url} is not an LNURL-pay service")
    amount_msat = amount_sat * 1000
    low, high = params.get("minSendable"), params.get("maxSendable")
    if type(low) is not int or type(high) is not int:
        raise LightningAddressError(f"{url} names no amounts it takes")
    if not low <= amount_msat <= high:
        raise LightningAddressError(
            f"{url} takes {low // 1000}..{high // 1000} sat, not {amount_sat}"
        )
    callback = params.get("callback")
    if not isinstance(callback, str):
        raise LightningAddressError(f"{url} names no callback")
    _allowed(callback)
    answer = await _get_json(session, callback, {"amount": str(amount_msat)})
    invoice = answer.get("pr")
    if not isinstance(invoice, str) or not invoice:
        raise LightningAddressError(f"{callback} gave no invoice")
    try:
        decoded = bolt11.decode(invoice)
    except Exception:  # the library raises several kinds for a malformed invoice
        raise LightningAddressError(f"{callback} gave an invoice that does not decode") from None
    metadata = params.get("metadata")
    hashed = decoded.description_hash
    # LUD-06: an invoice that names a description hash names the service's metadata
    if (
        hashed
        and isinstance(metadata, str)
        and hashed.lower() != hashlib.sha256(metadata.encode()).hexdigest()
    ):
        raise LightningAddressError(f"{callback} gave an invoice for another description")
    if decoded.amount_msat != amount_msat:
        raise InvoiceAmountMismatch(
            f"the invoice from {address} is for {decoded.amount_msat} msat,"
            f" {amount_msat} were asked; it is not paid"
        )
    return invoice
