"""Usage records in their own SQLite file (``usage.sqlite3`` in data_dir).

One connection on one thread of its own: a batch of records is one transaction there,
and nothing of it runs on the event loop. The file holds no money: losing it loses no
sat, and the ledger keeps what is needed to rebuild a charged request's record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from routstr_node.records.model import (
    Grouping,
    RecordFilter,
    UsageGroup,
    UsageRecord,
)
from routstr_node.sqlite_file import SqliteFile

T = TypeVar("T")
USAGE_FILE = "usage.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    mode TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    status INTEGER NOT NULL,
    latency_ms INTEGER,
    first_byte_ms INTEGER,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    units INTEGER NOT NULL,
    unit TEXT,
    cost_msat INTEGER NOT NULL CHECK (typeof(cost_msat) = 'integer' AND cost_msat >= 0),
    reservation_id INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS usage_by_reservation ON usage_records (reservation_id)
    WHERE reservation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_records (account_id, id);
CREATE INDEX IF NOT EXISTS usage_by_created ON usage_records (created);
CREATE TABLE IF NOT EXISTS usage_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_through INTEGER NOT NULL
);
INSERT OR IGNORE INTO usage_meta (id, checked_through) VALUES (1, 0);
"""
_COLUMNS = (
    "request_id, created, account_id, mode, route, model, provider, status, latency_ms,"
    " first_byte_ms, input_tokens, output_tokens, units, unit, cost_msat, reservation_id"
)
_INSERT = (
    f"INSERT INTO usage_records ({_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (reservation_id) WHERE reservation_id IS NOT NULL DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in (c.strip() for c in _COLUMNS.split(","))
        if c != "reservation_id"
    )
    # only a rebuilt record (no latency: made from the ledger) gives way to the full one
    + " WHERE usage_records.latency_ms IS NULL AND excluded.latency_ms IS NOT NULL"
)
_GROUP_KEYS = {
    Grouping.DAY: "strftime('%Y-%m-%d', created, 'unixepoch')",
    Grouping.MODEL: "model",
    Grouping.PROVIDER: "COALESCE(provider, '')",
}


def _row(record: UsageRecord) -> tuple[Any, ...]:
    r = record
    return (
        r.request_id,
        r.created,
        r.account_id,
        r.mode,
        r.route,
        r.model,
        r.provider,
        r.status,
        r.latency_ms,
        r.first_byte_ms,
        r.input_tokens,
        r.output_tokens,
        r.units,
        r.unit,
        r.cost_msat,
        r.reservation_id,
    )


def _record(row: Sequence[Any]) -> UsageRecord:
    return UsageRecord(
        request_id=str(row[0]),
        created=int(row[1]),
        account_id=int(row[2]),
        mode=str(row[3]),
        route=str(row[4]),
        model=str(row[5]),
        provider=row[6],
        status=int(row[7]),
        latency_ms=row[8],
        first_byte_ms=row[9],
        input_tokens=int(row[10]),
        output_tokens=int(row[11]),
        units=int(row[12]),
        unit=row[13],
        cost_msat=int(row[14]),
        reservation_id=row[15],
    )


def _where(where: RecordFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("model = ?", where.model),
        ("provider = ?", where.provider),
        ("status = ?", where.status),
        ("created >= ?", where.since),
        ("created < ?", where.until),
    ):
        if value is not None:
            clauses.append(column)
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class SqliteUsageStore:
    """:class:`~routstr_node.records.store.UsageStore` in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, _SCHEMA, "usage-records")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    async def open(self) -> None:
        await self._file.open()

    async def close(self) -> None:
        await self._file.close()

    async def add(self, records: Sequence[UsageRecord]) -> None:
        rows = [_row(r) for r in records]

        def insert(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(_INSERT, rows)

        await self._run(insert)

    async def history(
        self, account_id: int, limit: int, before: str | None
    ) -> tuple[list[UsageRecord], bool]:
        def read(conn: sqlite3.Connection) -> tuple[list[UsageRecord], bool]:
            below = None
            if before is not None:
                found = conn.execute(
                    "SELECT MIN(id) FROM usage_records WHERE account_id = ? AND request_id = ?",
                    (account_id, before),
                ).fetchone()
                below = found[0] if found is not None else None
                if below is None:
                    return [], False
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM usage_records WHERE account_id = ?"
                + (" AND id < ?" if below is not None else "")
                + " ORDER BY id DESC LIMIT ?",
                (account_id, *((below,) if below is not None else ()), limit + 1),
            ).fetchall()
            return [_record(r) for r in rows[:limit]], len(rows) > limit

        return await self._run(read)

    async def requests(self, where: RecordFilter, limit: int) -> list[UsageRecord]:
        clause, args = _where(where)

        def read(conn: sqlite3.Connection) -> list[UsageRecord]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM usage_records{clause} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            )
            return [_record(r) for r in rows]

        return await self._run(read)

    async def usage(self, group_by: Grouping, where: RecordFilter) -> list[UsageGroup]:
        clause, args = _where(where)
        key = _GROUP_KEYS[group_by]
        # the median latency per group in the same pass: rows of a group ranked by latency
        query = f"""
            WITH picked AS (
                SELECT {key} AS k, status, input_tokens, output_tokens, cost_msat, latency_ms
                FROM usage_records{clause}
            ), ranked AS (
                SELECT k, latency_ms,
                       ROW_NUMBER() OVER (PARTITION BY k ORDER BY latency_ms) AS n,
                       COUNT(latency_ms) OVER (PARTITION BY k) AS timed
                FROM picked WHERE latency_ms IS NOT NULL
            ), medians AS (
                SELECT k, latency_ms AS p50 FROM ranked WHERE n = (timed + 1) / 2
            )
            SELECT p.k, COUNT(*), SUM(p.status >= 400), SUM(p.input_tokens),
                   SUM(p.output_tokens), SUM(p.cost_msat), m.p50
            FROM picked p LEFT JOIN medians m ON m.k = p.k
            GROUP BY p.k ORDER BY p.k
        """

        def read(conn: sqlite3.Connection) -> list[UsageGroup]:
            return [
                UsageGroup(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6])
                for r in conn.execute(query, args)
            ]

        return await self._run(read)

    async def remove_older_than(self, created: int) -> int:
        def remove(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM usage_records WHERE created < ?", (created,)).rowcount

        return await self._run(remove)

    async def known_reservations(self, reservation_ids: Sequence[int]) -> set[int]:
        ids = list(reservation_ids)

        def read(conn: sqlite3.Connection) -> set[int]:
            found: set[int] = set()
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                found.update(
                    int(r[0])
                    for r in conn.execute(
                        "SELECT reservation_id FROM usage_records"
                        f" WHERE reservation_id IN ({marks})",
                        part,
                    )
                )
            return found

        return await self._run(read)

    async def checked_through(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute("SELECT checked_through FROM usage_meta WHERE id = 1").fetchone()[0]
            )

        return await self._run(read)

    async def set_checked_through(self, reservation_id: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE usage_meta SET checked_through = MAX(checked_through, ?) WHERE id = 1",
                (reservation_id,),
            )

        await self._run(write)

    async def written_after(self, record_id: int, limit: int) -> list[tuple[int, UsageRecord]]:
        def read(conn: sqlite3.Connection) -> list[tuple[int, UsageRecord]]:
            rows = conn.execute(
                f"SELECT id, {_COLUMNS} FROM usage_records WHERE id > ? ORDER BY id LIMIT ?",
                (record_id, limit),
            )
            return [(int(r[0]), _record(r[1:])) for r in rows]

        return await self._run(read)
