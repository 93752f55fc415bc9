"""Benchmark the node's wallet against a real local mint (a script, not a test).

    .venv/bin/python scripts/bench_wallet.py [--redeems 200] [--pairs 20000]
        [--database-url postgresql://…]   (an empty database: the PostgreSQL store)

Prints, for 1000-sat tokens:
  * redeem latency (check_token + WalletService.create_account), p50/p90/p99, beside the
    mint's bare swap round trip for the same work (MintClient.swap alone, 6 proofs in and
    6 outputs out), so the node's own added time is visible;
  * reserve+settle pairs per second on the ledger, sequential and with N concurrent tasks;
  * withdrawals (a send with change) once the database holds a long history of spent
    proofs and a large custody, so that a statement that reads either whole shows;
  * a short cProfile of redeems: where the node's own time goes.

Tokens are made directly with mints.client (mint quote, seed-derived outputs, mint), not
with nutshell's wallet, so making them costs little beside what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUOTE_TIMEOUT_S = 10.0


def _isolated_imports() -> None:
    """nutshell loads ./.env on import: import it from an empty directory."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench-nutshell-") as empty:
        os.chdir(empty)
        try:
            import cashu.core.settings  # noqa: F401
        finally:
            os.chdir(here)


_isolated_imports()

from mints.client import MintClient  # noqa: E402
from mints.directory import MintDirectory  # noqa: E402
from mints.keysets import amount_split  # noqa: E402
from mints.models import BlindedMessage, Proof  # noqa: E402
from mints.outputs import PreparedOutput, prepare_outputs, unblind  # noqa: E402
from mints.token import encode_token  # noqa: E402
from routstr_node.demo.mint import run_local_mint  # noqa: E402
from wallet.service import WalletService  # noqa: E402


class TokenMaker:
    """Fresh tokens from the mint, made with the node's own mint client."""

    def __init__(self, client: MintClient) -> None:
        self.client = client
        self.seed = os.urandom(64)
        self.counter = 0

    def outputs(self, keyset_id: str, amount: int) -> list[PreparedOutput]:
        amounts = amount_split(amount)
        prepared = prepare_outputs(self.seed, keyset_id, self.counter, amounts)
        self.counter += len(amounts)
        return prepared

    async def proofs(self, amount: int) -> list[Proof]:
        quote = await self.client.mint_quote(amount)
        deadline = time.monotonic() + QUOTE_TIMEOUT_S
        while (await self.client.get_mint_quote(quote.quote)).state != "PAID":
            if time.monotonic() > deadline:
                raise TimeoutError(f"mint quote {quote.quote} not paid")
            await asyncio.sleep(0.01)
        keyset = await self.client.active_keyset()
        outputs = self.outputs(keyset.id, amount)
        signatures = await self.client.mint(quote.quote, [o.message() for o in outputs])
        return [unblind(o, s, keyset) for o, s in zip(outputs, signatures, strict=True)]

    async def token(self, amount: int) -> str:
        return encode_token(self.client.url, await self.proofs(amount))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"  {name:<34} p50 {percentile(ms, 50):6.2f} ms   p90 {percentile(ms, 90):6.2f} ms"
        f"   p99 {percentile(ms, 99):6.2f} ms   mean {statistics.fmean(ms):6.2f} ms"
    )


class SwapTimer:
    """Records how long each MintClient.swap of one client takes (wraps the bound method)."""

    def __init__(self, client: MintClient) -> None:
        self.last = 0.0
        inner = client.swap

        async def swap(inputs: list[Proof], outputs: list[BlindedMessage]) -> Any:
            start = time.perf_counter()
            try:
                return await inner(inputs, outputs)
            finally:
                self.last = time.perf_counter() - start

        client.swap = swap  # type: ignore[method-assign]


@dataclass
class RedeemTimes:
    redeem: list[float] = field(default_factory=list)  # check_token + create_account
    inside_swap: list[float] = field(default_factory=list)  # the mint call within it
    bare_swap: list[float] = field(default_factory=list)  # the same swap made alone

    @property
    def own(self) -> list[float]:
        return [r - s for r, s in zip(self.redeem, self.inside_swap, strict=True)]


async def bench_redeem(
    service: WalletService, maker: TokenMaker, count: int, amount: int
) -> RedeemTimes:
    """Alternate a node redeem and a bare swap of the same shape, so both see one mint state."""
    client = maker.client
    keyset = await client.active_keyset()
    timer = SwapTimer(service.mints.primary)
    times = RedeemTimes()
    for i in range(count + 10):
        node_token = await maker.token(amount)
        bare_inputs = await maker.proofs(amount)
        bare_outputs = [o.message() for o in maker.outputs(keyset.id, amount)]

        start = time.perf_counter()
        await service.create_account(await service.mints.check_token(node_token))
        redeem_s = time.perf_counter() - start
        start = time.perf_counter()
        await client.swap(bare_inputs, bare_outputs)
        swap_s = time.perf_counter() - start
        if i >= 10:  # the first ones warm caches and connections
            times.redeem.append(redeem_s)
            times.inside_swap.append(timer.last)
            times.bare_swap.append(swap_s)
    return times


async def bench_ledger(
    service: WalletService, account_id: int, pairs: int, concurrency: int
) -> float:
    """Reserve+settle pairs per second with ``concurrency`` tasks on one account."""
    ledger = service.ledger
    per_task, extra = divmod(pairs, concurrency)

    async def worker(n: int) -> None:
        for _ in range(n):
            reservation = await ledger.reserve(account_id, 10)
            await ledger.settle(reservation, 1)

    start = time.perf_counter()
    await asyncio.gather(*(worker(per_task + (i < extra)) for i in range(concurrency)))
    return pairs / (time.perf_counter() - start)


PLACEHOLDER_SAT = 2**40  # no selection of a few sat ever takes one of these


async def add_placeholder_proofs(
    service: WalletService, mint_url: str, proofs: int, state: str
) -> None:
    """Rows a node that has served for months holds: ``spent`` history (custody and the
    audit untouched, but every scan reads them), or ``unspent`` custody of other amounts
    (coin selection must not read them all). Made up, so never sent to the mint: the
    unspent ones are worth more than any selection here takes, and deleted before the
    audit."""
    keyset = await service.mints.primary.active_keyset()
    amount = 1 if state == "spent" else PLACEHOLDER_SAT
    made = 0
    while made < proofs:
        rows = [
            (mint_url, keyset.id, amount, f"{state}-{i}", "02" + "00" * 32, f"y-{state}-{i}")
            for i in range(made, min(proofs, made + 50_000))
        ]
        await service.store.db.write(  # type: ignore[attr-defined]
            lambda c, rows=rows: c.executemany(
                "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state,"
                f" created_at) VALUES (?, ?, ?, ?, ?, ?, '{state}', 0)",
                rows,
            )
        )
        made += len(rows)


async def remove_unspent_placeholders(service: WalletService) -> None:
    await service.store.db.write(  # type: ignore[attr-defined]
        lambda c: c.execute("DELETE FROM proofs WHERE amount = ?", (PLACEHOLDER_SAT,))
    )


async def bench_withdraw(service: WalletService, account_id: int, count: int) -> RedeemTimes:
    """Withdrawals of 3 sat as tokens (a swap with change, unless custody holds the exact
    proofs): total time and the mint's part."""
    timer = SwapTimer(service.mints.primary)
    times = RedeemTimes()
    for i in range(count + 5):
        timer.last = 0.0  # a withdrawal paid with exact proofs asks the mint nothing
        start = time.perf_counter()
        await service.withdraw(account_id, 3)
        total = time.perf_counter() - start
        if i >= 5:
            times.redeem.append(total)
            times.inside_swap.append(timer.last)
    return times


_AREAS = [
    ("node: mints/", "/mints/"),
    ("node: wallet/", "/wallet/"),
    ("cashu crypto (b_dhke, secp)", "cashu/core/crypto"),
    ("coincurve / secp256k1", "coincurve"),
    ("cashu token models (pydantic/cbor)", "cashu/core"),
    ("pydantic", "pydantic"),
    ("aiohttp (client)", "aiohttp"),
    ("aiosqlite (loop side)", "aiosqlite"),
    ("asyncio machinery", "asyncio"),
    ("waiting in select (mint, db threads)", "selectors.py"),
    ("json", "json"),
]


def area_of(filename: str, function: str) -> str:
    if function.startswith("<method 'poll'") or function.startswith("<method 'select'"):
        return "waiting in select (mint, db threads)"
    for name, marker in _AREAS:
        if marker in filename:
            return name
    return "other" if filename != "~" else f"builtins: {function[:40]}"


async def profile_redeems(service: WalletService, maker: TokenMaker, count: int) -> str:
    tokens = [await maker.token(1000) for _ in range(count)]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for text in tokens:
        await service.create_account(await service.mints.check_token(text))
    profiler.disable()
    wall = time.perf_counter() - start

    stats = pstats.Stats(profiler)
    by_area: dict[str, float] = defaultdict(float)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        by_area[area_of(filename, function)] += tottime
    total = sum(by_area.values())
    lines = [
        f"cProfile of {count} redeems on the event loop thread: {wall * 1000 / count:.2f} ms "
        f"wall per redeem, {total * 1000 / count:.2f} ms profiled per redeem",
        "  self time by area (per redeem):",
    ]
    for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])[:14]:
        lines.append(f"    {area:<40} {seconds * 1000 / count:6.3f} ms  {seconds / total:5.1%}")

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    lines.append("  top 15 functions by self time:")
    lines.extend("    " + line for line in _stats_table(out.getvalue()))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"/(mints|wallet)/", 15)
    lines.append("  the node's own functions by cumulative time (coroutines: per resume):")
    lines.extend("    " + line for line in _stats_table(out.getvalue()))
    return "\n".join(lines)


def _stats_table(text: str) -> list[str]:
    """The table part of pstats output, with long paths shortened."""
    rows = text.splitlines()
    start = next((i for i, r in enumerate(rows) if r.strip().startswith("ncalls")), len(rows))
    cut = ("site-packages/", "/work/main/", "/usr/lib/python3.11/")
    table = []
    for row in rows[start:]:
        if not row.strip():
            continue
        for prefix in cut:
            if prefix in row:
                head, _, tail = row.partition(prefix)
                row = head + tail
        table.append(row)
    return table


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-wallet-") as tmp:
        root = Path(tmp)
        async with run_local_mint(root / "mint", input_fee_ppk=0) as mint:
            mints = MintDirectory([mint.url])
            service = WalletService(root / "node", mints, args.database_url)
            store = "PostgreSQL" if args.database_url else "one SQLite file, WAL"
            await service.open()
            maker = TokenMaker(MintClient(mint.url))
            try:
                print(f"mint {mint.url}: nutshell 0.20, FakeWallet, no fees, on this machine")
                times = await bench_redeem(service, maker, args.redeems, 1000)
                print(f"redeem of 1000-sat tokens (6 proofs), {args.redeems} sequential:")
                print(summary("node: check_token + create_account", times.redeem))
                print(summary("  of which the mint's swap call", times.inside_swap))
                print(summary("  node's own time (redeem - swap)", times.own))
                print(summary("mint: bare MintClient.swap alone", times.bare_swap))

                funding = await service.create_account(
                    await mints.check_token(await maker.token(1000))
                )
                account = funding.account_id
                seq = await bench_ledger(service, account, args.seq_pairs, 1)
                conc = await bench_ledger(service, account, args.pairs, args.concurrency)
                print(f"ledger reserve+settle pairs (one account, {store}):")
                print(f"  sequential ({args.seq_pairs} pairs):  {seq:>9,.0f} pairs/s")
                print(f"  {args.concurrency} tasks ({args.pairs} pairs):  {conc:>9,.0f} pairs/s")
                # the history is written straight into the SQLite file: not for PostgreSQL
                if (args.history > 0 or args.custody > 0) and not args.database_url:
                    await add_placeholder_proofs(service, mint.url, args.history, "spent")
                    await add_placeholder_proofs(service, mint.url, args.custody, "unspent")
                    sends = await bench_withdraw(service, account, args.withdrawals)
                    await remove_unspent_placeholders(service)
                    print(
                        f"withdraw 3 sat as a token ({args.withdrawals} sequential), with"
                        f" {args.history:,} spent proofs of history and {args.custody:,}"
                        " more unspent ones in custody:"
                    )
                    print(summary("node: withdraw", sends.redeem))
                    print(summary("  of which the mint's swap call", sends.inside_swap))
                    print(summary("  node's own time (withdraw - swap)", sends.own))
                report = await service.audit()
                print(f"audit after the benchmark: balanced={report.balanced}")

                if args.profile_redeems > 0:  # 0: no profile
                    print(await profile_redeems(service, maker, args.profile_redeems))
            finally:
                await maker.client.close()
                await service.close()
                await mints.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redeems", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=20_000, help="concurrent ledger pairs")
    parser.add_argument("--seq-pairs", type=int, default=5_000, help="sequential ledger pairs")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile-redeems", type=int, default=50)
    parser.add_argument(
        "--history", type=int, default=200_000, help="spent proofs added before withdrawals"
    )
    parser.add_argument(
        "--custody", type=int, default=50_000, help="unspent proofs added before withdrawals"
    )
    parser.add_argument("--withdrawals", type=int, default=100)
    parser.add_argument(
        "--database-url",
        default="",
        help="an empty PostgreSQL database (postgresql://…) instead of SQLite in a temp dir",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
