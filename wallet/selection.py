"""Coin selection: which proofs in custody pay for a token or an invoice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Coin:
    id: int
    amount: int
    keyset_id: str


@dataclass(frozen=True, slots=True)
class Selection:
    coins: tuple[Coin, ...]
    fee: int  # the mint's input fee for spending these coins

    @property
    def total(self) -> int:
        return sum(c.amount for c in self.coins)


def input_fee(coins: Sequence[Coin], fee_ppk: dict[str, int]) -> int:
    return (sum(fee_ppk.get(c.keyset_id, 0) for c in coins) + 999) // 1000


def select_exact(coins: Sequence[Coin], amount: int) -> tuple[Coin, ...] | None:
    """Coins worth exactly ``amount`` by greedy largest-first (denominations are powers of 2)."""
    if amount <= 0:
        return None
    picked: list[Coin] = []
    remaining = amount
    for coin in sorted(coins, key=lambda c: (-c.amount, c.id)):
        if coin.amount <= remaining:
            picked.append(coin)
            remaining -= coin.amount
            if remaining == 0:
                return tuple(picked)
    return None


def select_covering(
    coins: Sequence[Coin], amount: int, fee_ppk: dict[str, int]
) -> Selection | None:
    """Few coins worth at least ``amount`` plus their own input fee, or None if custody is short.

    Prefers the smallest single coin that covers everything; otherwise takes coins
    largest-first until covered, then drops the smallest ones that are not needed.
    """
    if amount <= 0:
        return None
    ordered = sorted(coins, key=lambda c: (c.amount, c.id))
    for coin in ordered:
        if coin.amount >= amount + input_fee([coin], fee_ppk):
            return Selection((coin,), input_fee([coin], fee_ppk))
    picked: list[Coin] = []
    for coin in reversed(ordered):
        picked.append(coin)
        if sum(c.amount for c in picked) >= amount + input_fee(picked, fee_ppk):
            break
    else:
        return None
    for coin in sorted(picked, key=lambda c: (c.amount, c.id)):
        trial = [c for c in picked if c is not coin]
        if trial and sum(c.amount for c in trial) >= amount + input_fee(trial, fee_ppk):
            picked = trial
    return Selection(tuple(picked), input_fee(picked, fee_ppk))
