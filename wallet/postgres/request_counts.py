"""The rate limiter's shared counts on PostgreSQL: one row per (key hash, window size)."""

from __future__ import annotations

from collections.abc import Sequence

from wallet.postgres.ledger import Conn


async def count_request(c: Conn, key_hash: str, windows: Sequence[tuple[int, int]]) -> list[int]:
    rows = await c.fetch(
        "INSERT INTO request_counts AS r (key_hash, size_s, start_s, count)"
        " SELECT $1, w.size_s, w.start_s, 1"
        " FROM unnest($2::int[], $3::bigint[]) AS w(size_s, start_s)"
        " ON CONFLICT (key_hash, size_s) DO UPDATE SET"
        " count = CASE WHEN r.start_s = EXCLUDED.start_s THEN r.count + 1 ELSE 1 END,"
        " start_s = EXCLUDED.start_s"
        " RETURNING size_s, count",
        key_hash,
        [size for size, _ in windows],
        [start for _, start in windows],
    )
    counts = {int(row[0]): int(row[1]) for row in rows}
    return [counts[size] for size, _ in windows]


async def uncount_request(c: Conn, key_hash: str, windows: Sequence[tuple[int, int]]) -> None:
    await c.execute(
        "UPDATE request_counts AS r SET count = r.count - 1"
        " FROM unnest($2::int[], $3::bigint[]) AS w(size_s, start_s)"
        " WHERE r.key_hash = $1 AND r.size_s = w.size_s AND r.start_s = w.start_s"
        " AND r.count > 0",
        key_hash,
        [size for size, _ in windows],
        [start for _, start in windows],
    )


async def forget_request_counts(c: Conn, now: int) -> int:
    done = await c.execute("DELETE FROM request_counts WHERE start_s + size_s <= $1", now)
    return int(str(done).rsplit(" ", 1)[-1])
