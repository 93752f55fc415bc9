"""Cashu token strings (cashuA = V3 JSON, cashuB = V4 CBOR) to and from typed proofs.

A token is identified by its proofs, not its encoding: the A and B forms of the
same proofs have the same :attr:`Token.token_id`, so they are one payment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2
from cashu.core.base import Proof as CashuProof
from cashu.core.base import TokenV3, TokenV3Token, TokenV4, TokenV4Proof, TokenV4Token
from cashu.core.crypto.keys import derive_keyset_short_id
from pydantic import ValidationError

from mints.errors import TokenInvalid
from mints.models import Proof

MAX_TOKEN_CHARS = 200_000
MAX_PROOFS = 1_000
# sat: 2^50 is over 11 million BTC; every sum of msat stays far inside 64 bits (the ledger
# keeps amounts as SQLite's signed 64-bit integers, up to 2^62 msat)
MAX_PROOF_AMOUNT = 2**50
MAX_TOKEN_AMOUNT = 2**51
_URI_PREFIX = "cashu:"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Token:
    """A decoded token: one mint, one unit, at least one proof."""

    mint: str
    unit: str
    proofs: tuple[Proof, ...]
    memo: str | None = None

    @property
    def amount(self) -> int:
        return sum(p.amount for p in self.proofs)

    @property
    def token_id(self) -> str:
        return proofs_id(self.proofs)

    @property
    def signatures(self) -> frozenset[tuple[str, str]]:
        """Each proof's secret with its signature: what only the token's holder has (the
        secrets alone the mint learns, and anyone who saw them spent)."""
        return proofs_signatures(self.proofs)

    @property
    def signed_id(self) -> str:
        """An identity of the token itself (secrets and signatures), one-way."""
        digest = hashlib.sha256()
        for secret, signature in sorted(self.signatures):
            digest.update(f"{secret}\n{signature}\n".encode())
        return digest.hexdigest()


def proofs_id(proofs: tuple[Proof, ...] | list[Proof]) -> str:
    """A stable, one-way identity of a set of proofs (independent of order and encoding)."""
    digest = hashlib.sha256()
    for secret in sorted(p.secret for p in proofs):
        digest.update(secret.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def proofs_signatures(proofs: tuple[Proof, ...] | list[Proof]) -> frozenset[tuple[str, str]]:
    return frozenset((p.secret, p.C.lower()) for p in proofs)


def normalize_mint_url(url: str) -> str:
    return url.strip().rstrip("/")


def looks_like_token(value: str) -> bool:
    """True for strings that claim to be a token (whether or not they decode)."""
    v = value.strip()
    if v.startswith(_URI_PREFIX):
        v = v[len(_URI_PREFIX) :]
    return v.startswith(("cashuA", "cashuB"))


def parse_token(value: str) -> Token:
    """Decode a token string; anything malformed raises :class:`TokenInvalid`, nothing else.

    The message says what is wrong (the encoding, the data inside, which field), so a
    client can tell a truncated token from one of another wallet's format.
    """
    if not isinstance(value, str):
        raise TokenInvalid("token must be a string")
    text = value.strip()
    if text.startswith(_URI_PREFIX):
        text = text[len(_URI_PREFIX) :]
    if len(text) > MAX_TOKEN_CHARS:
        raise TokenInvalid("token is too long")
    if text.startswith("cashuA"):
        raw = _payload(text, "cashuA")
        data = _decoded(raw, "cashuA", "JSON", json.loads)
        token = _from_v3(_model(TokenV3, data, "cashuA"))
    elif text.startswith("cashuB"):
        raw = _payload(text, "cashuB")
        data = _decoded(raw, "cashuB", "CBOR", cbor2.loads)
        token = _from_v4(_model(TokenV4, data, "cashuB"))
    else:
        raise TokenInvalid("not a Cashu token: expected cashuA… or cashuB…")
    _check_proofs(token.proofs)
    return token


def _payload(text: str, prefix: str) -> bytes:
    body = text[len(prefix) :]
    if not body:
        raise TokenInvalid(f"{prefix} token is empty after its prefix")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid(
            f"{prefix} token is not valid base64 (cut short or changed on the way?)"
        ) from None


def _decoded(raw: bytes, prefix: str, encoding: str, loads: Callable[[bytes], Any]) -> Any:
    try:
        data = loads(raw)
    except RecursionError:
        raise TokenInvalid(f"{prefix} token nests too deep") from None
    except Exception:  # json and cbor2 raise several types for bad input
        raise TokenInvalid(f"{prefix} token does not hold valid {encoding}") from None
    if not isinstance(data, dict):
        raise TokenInvalid(f"{prefix} token's {encoding} is not an object")
    return data


def _model(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    """The cashu library's token model of ``data``, its complaint turned into a sentence."""
    try:
        return cls.parse_obj(data)  # type: ignore[attr-defined, no-any-return]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "token"
        raise TokenInvalid(f"{prefix} token field '{where}': {first.get('msg')}") from None
    except RecursionError:
        raise TokenInvalid(f"{prefix} token nests too deep") from None
    except Exception as exc:  # the library's own checks ("Token must contain proofs.")
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
        raise TokenInvalid(f"{prefix} token is malformed: {reason}") from None


def _from_v3(v3: TokenV3) -> Token:
    if not v3.token:
        raise TokenInvalid("cashuA token holds no proofs")
    mints = {normalize_mint_url(str(t.mint)) for t in v3.token if t.mint}
    if len(mints) != 1:
        raise TokenInvalid("token must name exactly one mint")
    proofs = tuple(_proof(p) for p in v3.proofs)
    return Token(mint=mints.pop(), unit=str(v3.unit or "sat"), proofs=proofs, memo=v3.memo)


def _from_v4(v4: TokenV4) -> Token:
    if not isinstance(v4.m, str) or not v4.m:
        raise TokenInvalid("token names no mint")
    # read the groups, not v4.proofs: that builds cashu Proofs, each hashing its secret
    # to the curve (most of a parse), for a Y the node computes where it needs one
    try:
        proofs = tuple(
            Proof(amount=p.a, keyset_id=group.i.hex(), secret=str(p.s), C=p.c.hex())
            for group in v4.t
            for p in group.p
        )
    except (AttributeError, TypeError):
        raise TokenInvalid("cashuB token's proofs are malformed") from None
    return Token(mint=normalize_mint_url(v4.m), unit=str(v4.u), proofs=proofs, memo=v4.d)


def _proof(p: CashuProof) -> Proof:
    return Proof(amount=p.amount, keyset_id=str(p.id), secret=str(p.secret), C=str(p.C))


def _check_proofs(proofs: tuple[Proof, ...]) -> None:
    if not proofs:
        raise TokenInvalid("token holds no proofs")
    if len(proofs) > MAX_PROOFS:
        raise TokenInvalid("token holds too many proofs")
    secrets: set[str] = set()
    for p in proofs:
        if type(p.amount) is not int or p.amount <= 0 or p.amount & (p.amount - 1):
            raise TokenInvalid("proof amounts must be positive powers of two")
        if p.amount > MAX_PROOF_AMOUNT:
            raise TokenInvalid(f"a proof of {p.amount} sat is more than any mint issues")
        if not p.secret or not p.C or not p.keyset_id:
            raise TokenInvalid("proof is missing a field")
        if p.secret in secrets:
            raise TokenInvalid("token holds the same proof twice")
        secrets.add(p.secret)
        try:
            bytes.fromhex(p.C)
            bytes.fromhex(p.keyset_id)
        except ValueError:
            raise TokenInvalid("proof fields are not hex") from None
    if sum(p.amount for p in proofs) > MAX_TOKEN_AMOUNT:
        raise TokenInvalid("the token's proofs add up to more than any mint issues")


def encode_token(
    mint: str,
    proofs: list[Proof] | tuple[Proof, ...],
    *,
    legacy: bool = False,
    unit: str = "sat",
    memo: str | None = None,
) -> str:
    """Serialize proofs as cashuB (default) or cashuA (``legacy``)."""
    if legacy:
        cashu_proofs = [
            CashuProof(id=p.keyset_id, amount=p.amount, secret=p.secret, C=p.C) for p in proofs
        ]
        v3 = TokenV3(token=[TokenV3Token(mint=mint, proofs=cashu_proofs)], _unit=unit, _memo=memo)
        return str(v3.serialize())
    by_keyset: dict[str, list[Proof]] = {}
    for p in proofs:
        by_keyset.setdefault(p.keyset_id, []).append(p)
    groups = [
        TokenV4Token(
            i=bytes.fromhex(derive_keyset_short_id(kid)),
            p=[TokenV4Proof(a=p.amount, s=p.secret, c=bytes.fromhex(p.C)) for p in group],
        )
        for kid, group in by_keyset.items()
    ]
    return str(TokenV4(m=mint, u=unit, t=groups, d=memo).serialize())
