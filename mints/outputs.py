"""Blinded outputs derived from the node's seed (NUT-13), unblinding and DLEQ checks (NUT-12).

Every output the node asks a mint to sign is derived from (seed, keyset, counter), so
the seed alone restores any proof the node was ever given (NUT-09).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from mints import curve
from mints.errors import ProtocolError
from mints.models import BlindedMessage, BlindSignature, Keyset, Proof

_HARDENED = 2**31


@dataclass(frozen=True, slots=True)
class PreparedOutput:
    """An output before signing: what must be written down before a swap is sent."""

    amount: int
    keyset_id: str
    counter: int
    secret: str
    r: str
    B_: str
    y: str = ""  # hash_to_curve(secret), known from blinding; "" when read back from storage

    def message(self) -> BlindedMessage:
        return BlindedMessage(amount=self.amount, keyset_id=self.keyset_id, B_=self.B_)


def _ckd(key: int, chain: bytes, data: bytes) -> tuple[int, bytes]:
    """BIP32 CKDpriv, given the data its HMAC runs over."""
    digest = hmac.digest(chain, data, "sha512")
    tweak = int.from_bytes(digest[:32], "big")
    child = (tweak + key) % curve.ORDER
    if tweak >= curve.ORDER or child == 0:  # pragma: no cover - probability ~2^-127
        raise ProtocolError("BIP32 child key is invalid for this seed")
    return child, digest[32:]


def _hardened(key: int, chain: bytes, index: int) -> tuple[int, bytes]:
    return _ckd(
        key, chain, b"\x00" + key.to_bytes(32, "big") + (index + _HARDENED).to_bytes(4, "big")
    )


@lru_cache(maxsize=64)
def _keyset_node(seed: bytes, index: int) -> tuple[int, bytes]:
    """m/129372'/0'/index', the node every counter of one keyset derives from."""
    digest = hmac.digest(b"Bitcoin seed", seed, "sha512")
    key, chain = int.from_bytes(digest[:32], "big"), digest[32:]
    for step in (129372, 0, index):
        key, chain = _hardened(key, chain, step)
    return key, chain


def derive_secret(seed: bytes, keyset_id: str, counter: int) -> tuple[str, bytes]:
    """NUT-13: (secret, blinding factor) for a counter; HMAC for v2 ids, BIP32 for v1 ids."""
    if keyset_id.startswith("01"):
        base = b"Cashu_KDF_HMAC_SHA256" + bytes.fromhex(keyset_id) + counter.to_bytes(8, "big")
        secret = hmac.new(seed, base + b"\x00", hashlib.sha256).digest()
        r = hmac.new(seed, base + b"\x01", hashlib.sha256).digest()
        return secret.hex(), r
    if keyset_id.startswith("00"):
        index = int.from_bytes(bytes.fromhex(keyset_id), "big") % (2**31 - 1)
        key, chain = _hardened(*_keyset_node(seed, index), counter)
        # m/…/counter'/0 and /1 are not hardened: both hash the parent's public key.
        parent = curve.serialize(curve.base_mul(curve.scalar(key)))
        secret_key, _ = _ckd(key, chain, parent + (0).to_bytes(4, "big"))
        r_key, _ = _ckd(key, chain, parent + (1).to_bytes(4, "big"))
        return secret_key.to_bytes(32, "big").hex(), r_key.to_bytes(32, "big")
    raise ProtocolError(f"unsupported keyset id version: {keyset_id[:2]}")


@dataclass(frozen=True, slots=True)
class BlindedSecret:
    """A counter's secret, blinding factor and B_: an output still waiting for its amount."""

    keyset_id: str
    counter: int
    secret: str
    r: str
    B_: str
    y: str

    def output(self, amount: int) -> PreparedOutput:
        return PreparedOutput(
            amount=amount,
            keyset_id=self.keyset_id,
            counter=self.counter,
            secret=self.secret,
            r=self.r,
            B_=self.B_,
            y=self.y,
        )


def blind_counter(seed: bytes, keyset_id: str, counter: int) -> BlindedSecret:
    """The blinded secret of one counter (the amount is only a label on it)."""
    secret, r = derive_secret(seed, keyset_id, counter)
    y, b_ = curve.blind(secret.encode(), r)
    return BlindedSecret(
        keyset_id=keyset_id,
        counter=counter,
        secret=secret,
        r=r.hex(),
        B_=curve.serialize(b_).hex(),
        y=curve.serialize(y).hex(),
    )


def prepare_outputs(
    seed: bytes, keyset_id: str, first_counter: int, amounts: list[int]
) -> list[PreparedOutput]:
    """Outputs for ``amounts`` using counters first_counter, first_counter+1, …"""
    return [
        blind_counter(seed, keyset_id, first_counter + i).output(amount)
        for i, amount in enumerate(amounts)
    ]


@lru_cache(maxsize=1024)
def _mint_key(key_hex: str) -> curve.Point:
    """A mint's public key for one amount, parsed once: keys are used for every proof."""
    return curve.parse_hex(key_hex)


def _key(keyset: Keyset, amount: int) -> curve.Point:
    key_hex = keyset.keys.get(amount)
    if key_hex is None:
        raise ProtocolError(f"keyset {keyset.id} has no key for amount {amount}")
    try:
        return _mint_key(key_hex)
    except curve.CurveError as exc:
        raise ProtocolError(f"keyset {keyset.id} has a malformed key: {exc}") from exc


def unblinding_term(output: PreparedOutput, keyset: Keyset) -> curve.Point:
    """−r·A for an output: it needs nothing from the mint's answer."""
    try:
        return curve.unblinding_term(bytes.fromhex(output.r), _key(keyset, output.amount))
    except (curve.CurveError, ValueError) as exc:
        raise ProtocolError(f"cannot unblind: {exc}") from exc


def unblind(
    output: PreparedOutput,
    signature: BlindSignature,
    keyset: Keyset,
    *,
    blank: bool = False,
    term: curve.Point | None = None,
) -> Proof:
    """Turn the mint's signature on ``output`` into a proof, checking its DLEQ proof if given.

    ``blank`` outputs (NUT-08 melt change) take the amount the mint chose to sign.
    ``term`` is :func:`unblinding_term` of the output when it was computed beforehand.
    """
    amount = signature.amount if blank else output.amount
    if signature.keyset_id != output.keyset_id or (not blank and signature.amount != amount):
        raise ProtocolError("mint signed a different amount or keyset than asked")
    a = _key(keyset, amount)
    try:
        c_ = curve.parse_hex(signature.C_)
        if signature.dleq_e and signature.dleq_s:
            holds = curve.dleq_holds(
                curve.parse_hex(output.B_),
                c_,
                bytes.fromhex(signature.dleq_e),
                bytes.fromhex(signature.dleq_s),
                a,
            )
            if not holds:
                raise ProtocolError("mint's DLEQ proof does not verify")
        if term is None or blank:
            term = curve.unblinding_term(bytes.fromhex(output.r), a)
        c = curve.unblind(c_, term)
    except (curve.CurveError, ValueError) as exc:
        raise ProtocolError(f"cannot unblind the mint's signature: {exc}") from exc
    return Proof(
        amount=amount,
        keyset_id=output.keyset_id,
        secret=output.secret,
        C=curve.serialize(c).hex(),
    )


def proof_y(secret: str) -> str:
    """Y = hash_to_curve(secret), the public identity the mint uses in NUT-07."""
    return curve.serialize(curve.hash_to_curve(secret.encode())).hex()
