"""Blinded outputs derived from the node's seed (NUT-13), unblinding and DLEQ checks (NUT-12).

Every output the node asks a mint to sign is derived from (seed, keyset, counter), so
the seed alone restores any proof the node was ever given (NUT-09).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from bip32 import BIP32  # type: ignore[import-untyped]
from cashu.core.crypto.b_dhke import alice_verify_dleq, hash_to_curve, step3_alice
from cashu.core.crypto.secp import PrivateKey, PublicKey

from mints.errors import ProtocolError
from mints.models import BlindedMessage, BlindSignature, Keyset, Proof


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


@lru_cache(maxsize=4)
def _bip32(seed: bytes) -> BIP32:
    return BIP32.from_seed(seed)


def derive_secret(seed: bytes, keyset_id: str, counter: int) -> tuple[str, bytes]:
    """NUT-13: (secret, blinding factor) for a counter; HMAC for v2 ids, BIP32 for v1 ids."""
    if keyset_id.startswith("01"):
        base = b"Cashu_KDF_HMAC_SHA256" + bytes.fromhex(keyset_id) + counter.to_bytes(8, "big")
        secret = hmac.new(seed, base + b"\x00", hashlib.sha256).digest()
        r = hmac.new(seed, base + b"\x01", hashlib.sha256).digest()
        return secret.hex(), r
    if keyset_id.startswith("00"):
        index = int.from_bytes(bytes.fromhex(keyset_id), "big") % (2**31 - 1)
        path = f"m/129372'/0'/{index}'/{counter}'"
        bip = _bip32(seed)
        secret_b: bytes = bip.get_privkey_from_path(f"{path}/0")
        r_b: bytes = bip.get_privkey_from_path(f"{path}/1")
        return secret_b.hex(), r_b
    raise ProtocolError(f"unsupported keyset id version: {keyset_id[:2]}")


def prepare_outputs(
    seed: bytes, keyset_id: str, first_counter: int, amounts: list[int]
) -> list[PreparedOutput]:
    """Outputs for ``amounts`` using counters first_counter, first_counter+1, …"""
    outputs = []
    for i, amount in enumerate(amounts):
        counter = first_counter + i
        secret, r = derive_secret(seed, keyset_id, counter)
        Y = hash_to_curve(secret.encode())
        B_ = Y + PrivateKey(r).public_key  # step1_alice, keeping Y for the proof's identity
        outputs.append(
            PreparedOutput(
                amount=amount,
                keyset_id=keyset_id,
                counter=counter,
                secret=secret,
                r=r.hex(),
                B_=B_.format().hex(),
                y=Y.format().hex(),
            )
        )
    return outputs


def unblind(
    output: PreparedOutput, signature: BlindSignature, keyset: Keyset, *, blank: bool = False
) -> Proof:
    """Turn the mint's signature on ``output`` into a proof, checking its DLEQ proof if given.

    ``blank`` outputs (NUT-08 melt change) take the amount the mint chose to sign.
    """
    amount = signature.amount if blank else output.amount
    if signature.keyset_id != output.keyset_id or (not blank and signature.amount != amount):
        raise ProtocolError("mint signed a different amount or keyset than asked")
    key_hex = keyset.keys.get(amount)
    if key_hex is None:
        raise ProtocolError(f"keyset {keyset.id} has no key for amount {amount}")
    try:
        A = PublicKey(bytes.fromhex(key_hex))
        C_ = PublicKey(bytes.fromhex(signature.C_))
        r = PrivateKey(bytes.fromhex(output.r))
        if signature.dleq_e and signature.dleq_s:
            ok = alice_verify_dleq(
                PublicKey(bytes.fromhex(output.B_)),
                C_,
                PrivateKey(bytes.fromhex(signature.dleq_e)),
                PrivateKey(bytes.fromhex(signature.dleq_s)),
                A,
            )
            if not ok:
                raise ProtocolError("mint's DLEQ proof does not verify")
        C = step3_alice(C_, r, A)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"cannot unblind the mint's signature: {exc}") from exc
    return Proof(
        amount=amount,
        keyset_id=output.keyset_id,
        secret=output.secret,
        C=C.format().hex(),
    )


def proof_y(secret: str) -> str:
    """Y = hash_to_curve(secret), the public identity the mint uses in NUT-07."""
    return str(hash_to_curve(secret.encode()).format().hex())
