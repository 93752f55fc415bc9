"""One async client per mint, on one shared aiohttp session, with typed errors.

Only operations that are safe to repeat (reads, NUT-07 state, NUT-09 restore) are
retried; a swap, mint or melt is sent once and resolved by recovery if its answer is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from mints.errors import (
    KeysetInactive,
    MintError,
    MintRateLimited,
    MintRefused,
    MintUnreachable,
    OutputsAlreadySigned,
    ProofsPending,
    ProofsSpent,
    ProtocolError,
    TokenInvalid,
)
from mints.keysets import expand_keyset_id
from mints.models import BlindedMessage, BlindSignature, Keyset, MeltQuote, MintQuote, Proof

log = logging.getLogger(__name__)

_SAFE_ATTEMPTS = 3
# how long a listing of the mint's keysets is trusted to name the active one: a mint that
# rotates its keys signs no more on the old keyset (NUT-02 asks wallets to look again)
KEYSETS_MAX_AGE_S = 600.0


class MintClient:
    """The node's connection to one mint."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        keysets_max_age_s: float = KEYSETS_MAX_AGE_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._keysets: dict[str, Keyset] = {}
        self._keysets_lock = asyncio.Lock()
        self._keysets_max_age_s = keysets_max_age_s
        self._keysets_read_at = 0.0  # monotonic
        self._keysets_stale = False  # the mint refused outputs on a keyset it had listed

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=connector, raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport -----------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None, *, safe: bool) -> Any:
        attempts = _SAFE_ATTEMPTS if safe else 1
        for attempt in range(attempts):
            try:
                return await self._request_once(method, path, body)
            except (MintUnreachable, MintRateLimited):
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(0.1 * (2**attempt))
        raise AssertionError("unreachable")

    async def _request_once(self, method: str, path: str, body: Any) -> Any:
        url = self.url + path
        try:
            async with self._http().request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # no connection was opened: the mint never saw this request
            raise MintUnreachable(
                f"mint {self.url} unreachable: {type(exc).__name__}", request_sent=False
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MintUnreachable(f"mint {self.url} unreachable: {type(exc).__name__}") from None
        if status == 429:
            raise MintRateLimited(f"mint {self.url} is rate limiting the node")
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if status >= 500 and not (isinstance(data, dict) and "code" in data):
            raise MintUnreachable(f"mint {self.url} answered {status}")
        if status >= 400:
            error = _mint_error(status, data)
            if isinstance(error, KeysetInactive):
                self._keysets_stale = True
            raise error
        if data is None:
            raise ProtocolError(f"mint {self.url} answered {status} without JSON")
        return data

    # -- keysets (NUT-01, NUT-02) --------------------------------------------------

    async def keysets(self, *, refresh: bool = False) -> dict[str, Keyset]:
        """Every sat keyset of the mint with its keys; cached until an unknown id appears."""
        if self._keysets and not refresh:
            return self._keysets
        async with self._keysets_lock:
            if self._keysets and not refresh:
                return self._keysets
            return await self._read_keysets()

    async def _read_keysets(self) -> dict[str, Keyset]:
        """The listing read afresh (keys fetched for new ids only); under the lock."""
        listing = await self._request("GET", "/v1/keysets", safe=True)
        fresh: dict[str, Keyset] = {}
        for entry in _list(listing, "keysets"):
            if entry.get("unit") != "sat":
                continue
            kid = str(entry["id"])
            known = self._keysets.get(kid)
            fresh[kid] = Keyset(
                id=kid,
                unit="sat",
                active=bool(entry.get("active", True)),
                input_fee_ppk=int(entry.get("input_fee_ppk") or 0),
                keys=known.keys if known is not None else await self._keys(kid),
            )
        self._keysets = fresh
        self._keysets_read_at = time.monotonic()
        self._keysets_stale = False
        return fresh

    async def _keys(self, keyset_id: str) -> dict[int, str]:
        data = await self._request("GET", f"/v1/keys/{keyset_id}", safe=True)
        for entry in _list(data, "keysets"):
            if entry.get("id") == keyset_id:
                return {int(a): str(k) for a, k in entry["keys"].items()}
        raise ProtocolError(f"mint did not return keys for keyset {keyset_id}")

    async def keyset(self, keyset_id: str) -> Keyset:
        keysets = await self.keysets()
        if keyset_id not in keysets:
            keysets = await self.keysets(refresh=True)
        try:
            return keysets[keyset_id]
        except KeyError:
            raise ProtocolError(f"unknown keyset {keyset_id} at {self.url}") from None

    async def active_keyset(self) -> Keyset:
        """The keyset new outputs go to: the active sat keyset with the lowest fee.

        The listing is read again once it is older than ``keysets_max_age_s`` or the mint
        refused outputs on a keyset (it rotated its keys); when that read fails, the last
        listing is used: the mint call that follows says whether it still holds.
        """
        if self._keysets and self._keysets_outdated():
            async with self._keysets_lock:
                if self._keysets_outdated():
                    try:
                        await self._read_keysets()
                    except MintError as exc:
                        log.info("keysets of %s not re-read: %s", self.url, exc.message)
        for refresh in (False, True):
            active = _cheapest_active(await self.keysets(refresh=refresh))
            if active is not None:
                return active
        raise ProtocolError(f"mint {self.url} has no active sat keyset")

    def _keysets_outdated(self) -> bool:
        age = time.monotonic() - self._keysets_read_at
        return self._keysets_stale or age > self._keysets_max_age_s

    def known_active_keyset(self) -> Keyset | None:
        """The active keyset as last fetched, without asking the mint (None: not yet)."""
        return _cheapest_active(self._keysets)

    async def resolve_keyset_ids(self, proofs: Iterable[Proof]) -> list[Proof]:
        """Proofs with full keyset ids (V4 tokens carry short ones)."""
        result = []
        keysets = await self.keysets()
        for p in proofs:
            full = expand_keyset_id(p.keyset_id, keysets)
            if full is None:
                keysets = await self.keysets(refresh=True)
                full = expand_keyset_id(p.keyset_id, keysets)
            if full is None:
                raise TokenInvalid(f"the mint {self.url} has no keyset {p.keyset_id}")
            result.append(p if full == p.keyset_id else _with_keyset(p, full))
        return result

    # -- NUT-03 swap, NUT-07 state, NUT-09 restore ---------------------------------

    async def swap(
        self, inputs: list[Proof], outputs: list[BlindedMessage]
    ) -> list[BlindSignature]:
        body = {"inputs": [p.to_wire() for p in inputs], "outputs": [o.to_wire() for o in outputs]}
        data = await self._request("POST", "/v1/swap", body, safe=False)
        signatures = [BlindSignature.from_wire(s) for s in _list(data, "signatures")]
        if len(signatures) != len(outputs):
            raise ProtocolError("mint returned a different number of signatures than outputs")
        return signatures

    async def check_state(self, ys: list[str]) -> dict[str, str]:
        """NUT-07: Y → UNSPENT | PENDING | SPENT."""
        states: dict[str, str] = {}
        for start in range(0, len(ys), 500):
            chunk = ys[start : start + 500]
            data = await self._request("POST", "/v1/checkstate", {"Ys": chunk}, safe=True)
            for entry in _list(data, "states"):
                states[str(entry["Y"])] = str(entry["state"])
        missing = [y for y in ys if y not in states]
        if missing:
            raise ProtocolError(f"mint did not report the state of {len(missing)} proofs")
        return states

    async def restore(self, outputs: list[BlindedMessage]) -> dict[str, BlindSignature]:
        """NUT-09: signatures the mint already gave for these outputs, by B_."""
        body = {"outputs": [o.to_wire() for o in outputs]}
        data = await self._request("POST", "/v1/restore", body, safe=True)
        signed = _list(data, "outputs")
        sigs = _list(data, "signatures") or _list(data, "promises")
        if len(signed) != len(sigs):
            raise ProtocolError("malformed restore answer")
        return {
            str(o["B_"]): BlindSignature.from_wire(s) for o, s in zip(signed, sigs, strict=True)
        }

    # -- NUT-04 mint, NUT-05 melt --------------------------------------------------

    async def mint_quote(self, amount: int) -> MintQuote:
        body = {"amount": amount, "unit": "sat"}
        return _mint_quote(await self._request("POST", "/v1/mint/quote/bolt11", body, safe=False))

    async def get_mint_quote(self, quote_id: str) -> MintQuote:
        return _mint_quote(
            await self._request("GET", f"/v1/mint/quote/bolt11/{quote_id}", safe=True)
        )

    async def mint(self, quote_id: str, outputs: list[BlindedMessage]) -> list[BlindSignature]:
        body = {"quote": quote_id, "outputs": [o.to_wire() for o in outputs]}
        data = await self._request("POST", "/v1/mint/bolt11", body, safe=False)
        return [BlindSignature.from_wire(s) for s in _list(data, "signatures")]

    async def melt_quote(self, invoice: str) -> MeltQuote:
        body = {"request": invoice, "unit": "sat"}
        return _melt_quote(await self._request("POST", "/v1/melt/quote/bolt11", body, safe=False))

    async def get_melt_quote(self, quote_id: str) -> MeltQuote:
        return _melt_quote(
            await self._request("GET", f"/v1/melt/quote/bolt11/{quote_id}", safe=True)
        )

    async def melt(
        self, quote_id: str, inputs: list[Proof], outputs: list[BlindedMessage]
    ) -> MeltQuote:
        body = {
            "quote": quote_id,
            "inputs": [p.to_wire() for p in inputs],
            "outputs": [o.to_wire() for o in outputs],
        }
        return _melt_quote(await self._request("POST", "/v1/melt/bolt11", body, safe=False))

    async def info(self) -> dict[str, Any]:
        data = await self._request("GET", "/v1/info", safe=True)
        return data if isinstance(data, dict) else {}


def _cheapest_active(keysets: dict[str, Keyset]) -> Keyset | None:
    active = [k for k in keysets.values() if k.active]
    return min(active, key=lambda k: (k.input_fee_ppk, k.id)) if active else None


def _with_keyset(p: Proof, keyset_id: str) -> Proof:
    return Proof(amount=p.amount, keyset_id=keyset_id, secret=p.secret, C=p.C)


def _list(data: Any, key: str) -> list[Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"mint answer is not an object (wanted {key!r})")
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ProtocolError(f"mint answer's {key!r} is not a list")
    return value


def _mint_error(status: int, data: Any) -> Exception:
    code = data.get("code") if isinstance(data, dict) else None
    detail = str(data.get("detail", "")) if isinstance(data, dict) else ""
    if code == 11001 or "already spent" in detail:
        return ProofsSpent(detail or "proofs already spent")
    if code == 11002 or ("pending" in detail and "proofs" in detail):
        return ProofsPending(detail or "proofs are pending")
    if "already signed" in detail:  # 11003 (nutshell also numbers another error 11003)
        return OutputsAlreadySigned(
            f"mint refused the request ({status}, code {code}): {detail}",
            code=code if isinstance(code, int) else None,
            detail=detail,
        )
    if code in (12001, 12002) or detail.startswith(("keyset id inactive", "keyset id unknown")):
        # nutshell says it with the generic 11000 and these words
        return KeysetInactive(
            f"mint refused the request ({status}, code {code}): {detail}",
            code=code if isinstance(code, int) else None,
            detail=detail,
        )
    return MintRefused(
        f"mint refused the request ({status}, code {code}): {detail}",
        code=code if isinstance(code, int) else None,
        detail=detail,
    )


def _mint_quote(data: Any) -> MintQuote:
    try:
        return MintQuote(
            quote=str(data["quote"]),
            request=str(data["request"]),
            amount=int(data.get("amount") or 0),
            state=str(data.get("state") or ("PAID" if data.get("paid") else "UNPAID")),
            expiry=int(data["expiry"]) if data.get("expiry") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed mint quote: {exc}") from exc


def _melt_quote(data: Any) -> MeltQuote:
    try:
        return MeltQuote(
            quote=str(data["quote"]),
            amount=int(data["amount"]),
            fee_reserve=int(data["fee_reserve"]),
            state=str(data.get("state") or ("PAID" if data.get("paid") else "UNPAID")),
            expiry=int(data["expiry"]) if data.get("expiry") is not None else None,
            payment_preimage=data.get("payment_preimage"),
            change=tuple(BlindSignature.from_wire(s) for s in data.get("change") or []),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed melt quote: {exc}") from exc
