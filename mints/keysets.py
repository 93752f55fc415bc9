"""Keyset arithmetic: input fees (NUT-02), short ids (V4 tokens), amount splits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mints.errors import ProtocolError
from mints.models import Keyset, Proof


def input_fee(proofs: Iterable[Proof], keysets: Mapping[str, Keyset]) -> int:
    """The mint's fee in sat for spending these proofs: ceil(sum of input_fee_ppk / 1000)."""
    total_ppk = 0
    for p in proofs:
        keyset = keysets.get(p.keyset_id)
        if keyset is None:
            raise ProtocolError(f"unknown keyset {p.keyset_id}")
        total_ppk += keyset.input_fee_ppk
    return (total_ppk + 999) // 1000


def fee_for_count(count: int, keyset: Keyset) -> int:
    """Fee for spending ``count`` proofs of one keyset."""
    return (count * keyset.input_fee_ppk + 999) // 1000


_FEE_SEARCH_STEPS = 1000


def with_input_fee(amount: int, keyset: Keyset) -> int:
    """The least a token of ``keyset``'s proofs (split in powers of two) must be worth to
    bring ``amount`` after the mint's fee, which its own proofs pay."""
    for gross in range(amount, amount + _FEE_SEARCH_STEPS):  # fees are a few sat
        if fee_for_count(len(amount_split(gross)), keyset) <= gross - amount:
            return gross
    return amount + fee_for_count(64, keyset)  # an absurd fee: enough for any split


def amount_split(amount: int) -> list[int]:
    """Powers of two summing to ``amount``, smallest first (13 → [1, 4, 8])."""
    if amount < 0:
        raise ValueError("negative amount")
    return [1 << i for i in range(amount.bit_length()) if amount >> i & 1]


def expand_keyset_id(keyset_id: str, known: Iterable[str]) -> str | None:
    """The full id a (possibly short, V4-token) id stands for, or None when unknown."""
    candidates = [k for k in known if k == keyset_id]
    if candidates:
        return keyset_id
    if len(keyset_id) >= 16:
        matches = [k for k in known if k.startswith(keyset_id)]
        if len(matches) == 1:
            return matches[0]
    return None
