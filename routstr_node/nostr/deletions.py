"""The announcements their authors withdrew (NIP-09), remembered so that a copy still
on another relay, or delivered again at a reconnect, is not listed again.

Per node key and ``d`` value: the date up to which its announcements are withdrawn.
Bounded: a few ``d`` values per key, and as many keys as the directory lists nodes
(the keys with the oldest withdrawals are forgotten first). Withdrawals that took a
listed node off are kept apart from requests about keys never listed: any made-up key
can sign those, and a flood of them must not push out a real withdrawal.
"""

from __future__ import annotations

MAX_D_PER_KEY = 8


class Deletions:
    def __init__(self, max_keys: int) -> None:
        self._listed = _Withdrawals(max_keys)  # withdrawals that took a listing off
        self._unlisted = _Withdrawals(max_keys)  # the rest (seen first, or made up)

    def __len__(self) -> int:
        return len(self._listed.keys() | self._unlisted.keys())

    def covers(self, pubkey: str, d: str, created_at: int) -> bool:
        """Whether an announcement by ``pubkey`` under ``d`` of that date was withdrawn."""
        return self._listed.covers(pubkey, d, created_at) or self._unlisted.covers(
            pubkey, d, created_at
        )

    def news(self, pubkey: str, dates: dict[str, int], *, removes: bool) -> dict[str, int]:
        """What of ``dates`` (d → date withdrawn up to) ``add`` would keep; ``removes``:
        the request takes a listed announcement off."""
        return self._table(pubkey, removes).news(pubkey, dates)

    def add(self, pubkey: str, dates: dict[str, int], *, removes: bool) -> None:
        """Remember ``dates`` (as returned by ``news``)."""
        self._table(pubkey, removes).add(pubkey, dates)

    def clear(self) -> None:
        self._listed.clear()
        self._unlisted.clear()

    def _table(self, pubkey: str, removes: bool) -> _Withdrawals:
        return self._listed if removes or pubkey in self._listed else self._unlisted


class _Withdrawals:
    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._dates: dict[str, dict[str, int]] = {}

    def __contains__(self, pubkey: object) -> bool:
        return pubkey in self._dates

    def keys(self) -> set[str]:
        return set(self._dates)

    def covers(self, pubkey: str, d: str, created_at: int) -> bool:
        return created_at <= self._dates.get(pubkey, {}).get(d, -1)

    def news(self, pubkey: str, dates: dict[str, int]) -> dict[str, int]:
        known = self._dates.get(pubkey, {})
        newer = {d: date for d, date in dates.items() if date > known.get(d, -1)}
        if not newer:
            return {}
        full = pubkey not in self._dates and len(self._dates) >= self._max_keys
        if full and max(newer.values()) <= min(max(k.values()) for k in self._dates.values()):
            return {}  # older than every withdrawal kept: it would be forgotten first
        kept = _newest({**known, **newer})
        return {d: date for d, date in newer.items() if kept.get(d) == date}

    def add(self, pubkey: str, dates: dict[str, int]) -> None:
        if not dates:
            return
        if pubkey not in self._dates and len(self._dates) >= self._max_keys:
            oldest = min(self._dates, key=lambda k: max(self._dates[k].values()))
            del self._dates[oldest]
        self._dates[pubkey] = _newest({**self._dates.get(pubkey, {}), **dates})

    def clear(self) -> None:
        self._dates.clear()


def _newest(dates: dict[str, int]) -> dict[str, int]:
    """The ``MAX_D_PER_KEY`` newest entries: one key cannot fill memory with ``d`` values."""
    if len(dates) <= MAX_D_PER_KEY:
        return dates
    ranked = sorted(dates.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:MAX_D_PER_KEY])
