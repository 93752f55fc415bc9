"""Runs a program (the node) and reports where its memory is, on SIGUSR1, to stderr.

For the benchmark's memory evidence only: Python's own accounting (tracemalloc's live
bytes, and what grew since the first report) beside what the kernel counts (RSS),
so "RSS stays up after a burst" can be told apart as live objects or allocator retention.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

_first: list[tracemalloc.Snapshot] = []  # the first report's snapshot, to compare with


def _report(signum: int, frame: FrameType | None) -> None:
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    if not _first:
        _first.append(snapshot)
    else:
        for diff in snapshot.compare_to(_first[0], "traceback")[:12]:
            where = diff.traceback.format()[-1].strip()
            print(
                f"MEMWATCH grew {diff.size_diff / 1024:+.0f} KiB"
                f" in {diff.count_diff:+d} blocks at {where}",
                file=sys.stderr,
            )
    with open(f"/proc/{os.getpid()}/status") as status:
        rss = next(ln.split()[1] for ln in status if ln.startswith("VmRSS"))
    print(
        f"MEMWATCH traced_live_mb={current / 2**20:.1f} traced_peak_mb={peak / 2**20:.1f}"
        f" rss_mb={int(rss) / 1024:.1f}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _report)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
