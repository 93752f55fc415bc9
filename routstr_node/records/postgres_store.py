"""Usage records in PostgreSQL (``[database] url``): shared by every node process.

The same questions as the SQLite store, in PostgreSQL's dialect, on a small pool of
the node's own. A record is unique per reservation: two processes rebuilding the same
lost record write it once, and a full record replaces a rebuilt one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from routstr_node.records.model import Grouping, RecordFilter, UsageGroup, UsageRecord

_POOL_SIZE = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    mode TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    status INTEGER NOT NULL,
    latency_ms BIGINT,
    first_byte_ms BIGINT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    units BIGINT NOT NULL,
    unit TEXT,
    cost_msat BIGINT NOT NULL CHECK (cost_msat >= 0),
    reservation_id BIGINT UNIQUE
);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_records (account_id, id);
CREATE INDEX IF NOT EXISTS usage_by_created ON usage_records (created);
CREATE TABLE IF NOT EXISTS usage_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_through BIGINT NOT NULL
);
INSERT INTO usage_meta (id, checked_through) VALUES (1, 0) ON CONFLICT DO NOTHING;
"""
_FIELDS = (
    "request_id",
    "created",
    "account_id",
    "mode",
    "route",
    "model",
    "provider",
    "status",
    "latency_ms",
    "first_byte_ms",
    "input_tokens",
    "output_tokens",
    "units",
    "unit",
    "cost_msat",
    "reservation_id",
)
_COLUMNS = ", ".join(_FIELDS)
_INSERT = (
    f"INSERT INTO usage_records ({_COLUMNS}) VALUES"
    f" ({', '.join(f'${i}' for i in range(1, len(_FIELDS) + 1))})"
    " ON CONFLICT (reservation_id) DO UPDATE SET "
    + ", ".join(f"{f} = EXCLUDED.{f}" for f in _FIELDS if f != "reservation_id")
    # only a rebuilt record (no latency: made from the ledger) gives way to the full one
    + " WHERE usage_records.latency_ms IS NULL AND EXCLUDED.latency_ms IS NOT NULL"
)
_GROUP_KEYS = {
    Grouping.DAY: "to_char(to_timestamp(created) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    Grouping.MODEL: "model",
    Grouping.PROVIDER: "COALESCE(provider, '')",
}


def _row(r: UsageRecord) -> tuple[Any, ...]:
    return tuple(getattr(r, f) for f in _FIELDS)


def _record(row: Any) -> UsageRecord:
    return UsageRecord(
        request_id=row["request_id"],
        created=int(row["created"]),
        account_id=int(row["account_id"]),
        mode=row["mode"],
        route=row["route"],
        model=row["model"],
        provider=row["provider"],
        status=int(row["status"]),
        latency_ms=row["latency_ms"],
        first_byte_ms=row["first_byte_ms"],
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        units=int(row["units"]),
        unit=row["unit"],
        cost_msat=int(row["cost_msat"]),
        reservation_id=row["reservation_id"],
    )


def _where(where: RecordFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("model =", where.model),
        ("provider =", where.provider),
        ("status =", where.status),
        ("created >=", where.since),
        ("created <", where.until),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class PostgresUsageStore:
    """:class:`~routstr_node.records.store.UsageStore` in PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the usage store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=_POOL_SIZE)
        async with self.pool.acquire() as conn, conn.transaction():
            # one process creates the tables at a time
            await conn.execute("SELECT pg_advisory_xact_lock(727419001)")
            await conn.execute(_SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def add(self, records: Sequence[UsageRecord]) -> None:
        rows = [_row(r) for r in records]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, rows)

    async def history(
        self, account_id: int, limit: int, before: str | None
    ) -> tuple[list[UsageRecord], bool]:
        async with self.pool.acquire() as conn:
            below = None
            if before is not None:
                below = await conn.fetchval(
                    "SELECT MIN(id) FROM usage_records WHERE account_id = $1 AND request_id = $2",
                    account_id,
                    before,
                )
                if below is None:
                    return [], False
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM usage_records WHERE account_id = $1 AND id < $2"
                    " ORDER BY id DESC LIMIT $3",
                    account_id,
                    below,
                    limit + 1,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM usage_records WHERE account_id = $1"
                    " ORDER BY id DESC LIMIT $2",
                    account_id,
                    limit + 1,
                )
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def requests(self, where: RecordFilter, limit: int) -> list[UsageRecord]:
        clause, args = _where(where)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM usage_records{clause} ORDER BY id DESC"
                f" LIMIT ${len(args) + 1}",
                *args,
                limit,
            )
        return [_record(r) for r in rows]

    async def usage(self, group_by: Grouping, where: RecordFilter) -> list[UsageGroup]:
        clause, args = _where(where)
        key = _GROUP_KEYS[group_by]
        query = (
            f"SELECT {key} AS k, COUNT(*) AS requests,"
            " COUNT(*) FILTER (WHERE status >= 400) AS errors,"
            " COALESCE(SUM(input_tokens), 0) AS input_tokens,"
            " COALESCE(SUM(output_tokens), 0) AS output_tokens,"
            " COALESCE(SUM(cost_msat), 0) AS earnings,"
            " percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50"
            f" FROM usage_records{clause} GROUP BY k ORDER BY k"
        )
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(query, *args)
        return [
            UsageGroup(
                str(r["k"]),
                int(r["requests"]),
                int(r["errors"]),
                int(r["input_tokens"]),
                int(r["output_tokens"]),
                int(r["earnings"]),
                None if r["p50"] is None else int(r["p50"]),
            )
            for r in rows
        ]

    async def remove_older_than(self, created: int) -> int:
        async with self.pool.acquire() as conn:
            status = await conn.execute("DELETE FROM usage_records WHERE created < $1", created)
        return int(status.split()[-1])

    async def known_reservations(self, reservation_ids: Sequence[int]) -> set[int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT reservation_id FROM usage_records WHERE reservation_id = ANY($1::bigint[])",
                list(reservation_ids),
            )
        return {int(r[0]) for r in rows}

    async def checked_through(self) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT checked_through FROM usage_meta WHERE id = 1"))

    async def set_checked_through(self, reservation_id: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE usage_meta SET checked_through = GREATEST(checked_through, $1)"
                " WHERE id = 1",
                reservation_id,
            )

    async def written_after(self, record_id: int, limit: int) -> list[tuple[int, UsageRecord]]:
        rows = await self.pool.fetch(
            f"SELECT id, {_COLUMNS} FROM usage_records WHERE id > $1 ORDER BY id LIMIT $2",
            record_id,
            limit,
        )
        return [(int(r["id"]), _record(r)) for r in rows]
