"""Coin selection (wallet/selection.py) is pure: its promises, checked by hypothesis.

Coins are what a mint signs: powers of two, in a few keysets with input fees of at most
1000 ppk (so one more coin never costs more in fee than it is worth).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from mints.keysets import amount_split, fee_for_count, with_input_fee
from mints.models import Keyset
from wallet.custody.send import EXTRA_PROOFS_WITHOUT_SWAP, _plan_send
from wallet.errors import InsufficientBalance, InsufficientCustody
from wallet.selection import Coin, Selection, input_fee, select_covering, select_exact

KEYSETS = ["01aa", "01bb", "00cc"]
_SETTINGS = settings(max_examples=400, deadline=None)


@st.composite
def coin_lists(draw: st.DrawFn, max_size: int = 14) -> list[Coin]:
    exponents = draw(st.lists(st.integers(min_value=0, max_value=12), max_size=max_size))
    return [
        Coin(id=i + 1, amount=1 << e, keyset_id=draw(st.sampled_from(KEYSETS)))
        for i, e in enumerate(exponents)
    ]


fee_tables = st.fixed_dictionaries(
    {k: st.sampled_from([0, 0, 1, 100, 250, 999, 1000]) for k in KEYSETS}
)


def subset_sums(coins: Sequence[Coin]) -> set[int]:
    sums = {0}
    for c in coins:
        sums |= {s + c.amount for s in sums}
    return sums


def covers(coins: Sequence[Coin], amount: int, fee_ppk: dict[str, int]) -> bool:
    return sum(c.amount for c in coins) >= amount + input_fee(coins, fee_ppk)


def assert_subset_without_duplicates(picked: Sequence[Coin], coins: Sequence[Coin]) -> None:
    assert len({c.id for c in picked}) == len(picked), "a coin was picked twice"
    by_id = {c.id: c for c in coins}
    assert all(by_id.get(c.id) == c for c in picked), "picked a coin it was not given"


# -- select_exact -------------------------------------------------------------------------


@_SETTINGS
@given(coin_lists(), st.integers(min_value=-5, max_value=9000))
def test_select_exact_is_exact_and_complete(coins: list[Coin], amount: int) -> None:
    picked = select_exact(coins, amount)

    reachable = amount > 0 and amount in subset_sums(coins)
    if picked is None:
        # with power-of-two coins, greedy largest-first finds every reachable amount
        assert not reachable
    else:
        assert reachable
        assert sum(c.amount for c in picked) == amount
        assert_subset_without_duplicates(picked, coins)


@_SETTINGS
@given(coin_lists())
def test_select_exact_finds_any_sub_collection(coins: list[Coin]) -> None:
    """Every amount some of the coins add up to is found."""
    for amount in sorted(subset_sums(coins) - {0})[:40]:
        picked = select_exact(coins, amount)
        assert picked is not None, amount
        assert sum(c.amount for c in picked) == amount


# -- select_covering ------------------------------------------------------------------------


@_SETTINGS
@given(coin_lists(), st.integers(min_value=-5, max_value=9000), fee_tables)
def test_select_covering_covers_amount_and_its_own_fee(
    coins: list[Coin], amount: int, fee_ppk: dict[str, int]
) -> None:
    selection = select_covering(coins, amount, fee_ppk)

    if amount <= 0:
        assert selection is None
        return
    if selection is None:
        # only when no subset covers; with fees <= 1000 ppk that is: all coins do not
        assert not covers(coins, amount, fee_ppk)
        return
    picked = selection.coins
    assert picked, "an empty selection pays nothing"
    assert_subset_without_duplicates(picked, coins)
    assert selection.fee == input_fee(picked, fee_ppk)
    assert selection.total == sum(c.amount for c in picked)
    assert selection.total >= amount + selection.fee


@_SETTINGS
@given(coin_lists(), st.integers(min_value=1, max_value=9000), fee_tables)
def test_select_covering_takes_no_coin_it_does_not_need(
    coins: list[Coin], amount: int, fee_ppk: dict[str, int]
) -> None:
    selection = select_covering(coins, amount, fee_ppk)
    if selection is None or len(selection.coins) == 1:
        return
    for dropped in selection.coins:
        rest = [c for c in selection.coins if c.id != dropped.id]
        assert not covers(rest, amount, fee_ppk), f"{dropped} was not needed"


@_SETTINGS
@given(coin_lists(), st.integers(min_value=1, max_value=9000), fee_tables)
def test_select_covering_prefers_the_smallest_single_coin(
    coins: list[Coin], amount: int, fee_ppk: dict[str, int]
) -> None:
    singles = [c for c in coins if covers([c], amount, fee_ppk)]
    selection = select_covering(coins, amount, fee_ppk)
    if not singles:
        return
    assert selection is not None
    assert len(selection.coins) == 1
    assert selection.coins[0].amount == min(c.amount for c in singles)


def test_select_covering_examples() -> None:
    coins = [Coin(1, 64, "01aa"), Coin(2, 32, "01aa"), Coin(3, 4, "01aa")]
    fees = {"01aa": 100}

    exact = select_covering(coins, 99, fees)  # 64 + 32 + 4 = 100, fee 1
    assert exact is not None and exact.total == 100 and exact.fee == 1
    assert select_covering(coins, 100, fees) is None  # 100 + fee 1 > 100
    assert select_covering(coins, 100, {}) is not None
    assert select_exact(coins, 68) == (coins[0], coins[2])
    assert select_exact(coins, 5) is None


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=5000))
def test_a_token_asked_for_brings_the_amount_after_its_own_fee(amount: int, ppk: int) -> None:
    """What a 402 asks for: the least gross whose powers-of-two proofs, less the mint's
    fee for them, still bring the amount."""
    keyset = Keyset(id="00ab", unit="sat", active=True, input_fee_ppk=ppk, keys={})

    def after_fee(gross: int) -> int:
        return gross - fee_for_count(len(amount_split(gross)), keyset)

    gross = with_input_fee(amount, keyset)
    assert after_fee(gross) >= amount
    assert all(after_fee(smaller) < amount for smaller in range(amount, gross))
    if ppk == 0:
        assert gross == amount


# -- planning a send (exact proofs, or a swap) ----------------------------------------------


@_SETTINGS
@given(coin_lists(max_size=40), st.integers(min_value=1, max_value=9000), fee_tables)
def test_a_send_is_exact_and_small_or_a_swap_the_account_can_pay(
    coins: list[Coin], amount: int, fee_ppk: dict[str, int]
) -> None:
    """A token of many proofs (too big for a header) only when no swap is affordable."""
    available = sum(c.amount for c in coins)  # the account may spend all the custody holds
    if amount > available:
        return
    try:
        planned, plan = _plan_send(coins, fee_ppk, amount, available)
    except (InsufficientCustody, InsufficientBalance):
        assert amount not in subset_sums(coins)
        return
    assert planned == amount
    if isinstance(plan, Selection):
        assert covers(plan.coins, amount, fee_ppk)
        assert amount + plan.fee <= available
        assert_subset_without_duplicates(plan.coins, coins)
    else:
        assert sum(c.amount for c in plan) == amount
        assert_subset_without_duplicates(plan, coins)
        if len(plan) > len(amount_split(amount)) + EXTRA_PROOFS_WITHOUT_SWAP:
            swap = select_covering(coins, amount, fee_ppk)
            assert swap is None or amount + swap.fee > available


@_SETTINGS
@given(coin_lists(max_size=40), st.integers(min_value=1, max_value=9000), fee_tables)
def test_sending_everything_never_plans_beyond_the_balance(
    coins: list[Coin], available: int, fee_ppk: dict[str, int]
) -> None:
    """``amount`` None: all the account can pay, a swap's fee included."""
    try:
        planned, plan = _plan_send(coins, fee_ppk, None, available)
    except (InsufficientCustody, InsufficientBalance):
        return
    assert 0 < planned <= available
    if isinstance(plan, Selection):
        assert covers(plan.coins, planned, fee_ppk)
        assert planned + plan.fee <= available
    else:
        assert sum(c.amount for c in plan) == planned
    assert_subset_without_duplicates(plan.coins if isinstance(plan, Selection) else plan, coins)
