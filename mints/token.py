"""Cashu token strings (cashuA = V3 JSON, cashuB = V4 CBOR) to and from typed proofs.

A token is identified by its proofs, not its encoding: the A and B forms of the
same proofs have the same :attr:`Token.token_id`, so they are one payment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cashu.core.base import Proof as CashuProof
from cashu.core.base import TokenV3, TokenV3Token, TokenV4, TokenV4Proof, TokenV4Token
from cashu.core.crypto.keys import derive_keyset_short_id

from mints.errors import TokenInvalid
from mints.models import Proof

MAX_TOKEN_CHARS = 200_000
MAX_PROOFS = 1_000
_URI_PREFIX = "cashu:"


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
    """Decode a token string; anything malformed raises :class:`TokenInvalid`, nothing else."""
    if not isinstance(value, str):
        raise TokenInvalid("token must be a string")
    text = value.strip()
    if text.startswith(_URI_PREFIX):
        text = text[len(_URI_PREFIX) :]
    if len(text) > MAX_TOKEN_CHARS:
        raise TokenInvalid("token is too long")
    try:
        if text.startswith("cashuA"):
            token = _from_v3(TokenV3.deserialize(text))
        elif text.startswith("cashuB"):
            token = _from_v4(TokenV4.deserialize(text))
        else:
            raise TokenInvalid("not a Cashu token: expected cashuA… or cashuB…")
    except TokenInvalid:
        raise
    except Exception as exc:  # the cashu decoders raise anything from asserts to CBOR errors
        raise TokenInvalid(f"malformed Cashu token ({type(exc).__name__})") from None
    _check_proofs(token.proofs)
    return token


def _from_v3(v3: TokenV3) -> Token:
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
    proofs = tuple(
        Proof(amount=p.a, keyset_id=group.i.hex(), secret=str(p.s), C=p.c.hex())
        for group in v4.t
        for p in group.p
    )
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
