"""Where usage records are kept: one Protocol, a SQLite file of its own by default.

Records are kept apart from the money (the wallet's database): writing them is never
part of a charge's transaction. A PostgreSQL implementation fits the same Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from routstr_node.records.model import Grouping, RecordFilter, UsageGroup, UsageRecord


class UsageStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, records: Sequence[UsageRecord]) -> None:
        """Keep ``records``; one already kept for the same reservation is left as it is,
        unless it was rebuilt from the ledger (then the full record takes its place)."""

    async def history(
        self, account_id: int, limit: int, before: str | None
    ) -> tuple[list[UsageRecord], bool]:
        """The account's records, newest first, older than its record ``before`` (a
        request id); and whether there are more."""

    async def requests(self, where: RecordFilter, limit: int) -> list[UsageRecord]:
        """Records matching ``where``, newest first."""

    async def usage(self, group_by: Grouping, where: RecordFilter) -> list[UsageGroup]:
        """Totals of the records matching ``where``, one row per group."""

    async def remove_older_than(self, created: int) -> int:
        """Remove records created before ``created``; how many went."""

    async def known_reservations(self, reservation_ids: Sequence[int]) -> set[int]:
        """Which of these reservations have a record."""

    async def checked_through(self) -> int:
        """Reservations up to this id are known to have their records."""

    async def set_checked_through(self, reservation_id: int) -> None: ...

    async def written_after(self, record_id: int, limit: int) -> list[tuple[int, UsageRecord]]:
        """Records in the order they were written, after ``record_id`` (with their ids):
        how ``migrate`` moves them to another store, page by page."""
