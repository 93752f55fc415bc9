"""Give memory back to the system once a burst of streams is over.

After 2,000 streams closed, RSS stayed +91 % over the idle figure. What held it
(measured with ``scripts/bench_proxy.py --memory-evidence``): the closed connections'
transports, cyclic garbage that the tuned collector (server.settle_the_collector) would
only free at a full pass a quiet node never reaches; idle upstream connections kept a
minute (upstream.UPSTREAM_KEEPALIVE_S); and the allocators' free pages. Once quiet, the
node now runs a full collection and glibc's ``malloc_trim``: +45..60 %, with every
Python object of the streams gone (tracemalloc: +1.1 MB live against idle); after
5,000 streams +36 % (it was +248 %). The rest is pymalloc's arenas, freed only when
wholly empty: with ``PYTHONMALLOC=malloc`` the same runs come back to +5..7 %, at 5..25 %
more CPU per request, so that stays the operator's choice (README, "Memory").
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
from collections.abc import Callable

TRIM_EVERY_S = 5.0  # how often the node looks whether a trim is due


# a quiet node is trimmed at its second look after the last request, and again after
# its idle upstream connections close (within twice their keep-alive)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to give back
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load_trim()


class HeapTrimmer:
    """Collects garbage and trims the heap once the node has gone quiet after serving.

    Looked at every ``TRIM_EVERY_S``: a trim is due when no request was answered since
    the last look, no stream is open, and something changed since the last trim:
    requests answered, or connections closed (their transports are cyclic garbage that
    only a full collection frees; a quiet node allocates too little to trigger one).
    Measured after 1,000 streams: 1,800 closed transports still alive 2 minutes later.
    """

    def __init__(self) -> None:
        self._served_at_look = -1
        self._at_trim = (0, _open_files())

    def due(self, served: int, open_streams: int) -> bool:
        quiet = served == self._served_at_look and open_streams == 0
        self._served_at_look = served
        return quiet and (served, _open_files()) != self._at_trim

    async def trim_if_due(self, served: int, open_streams: int) -> bool:
        if not self.due(served, open_streams):
            return False
        # on the loop's thread: finalizers of asyncio objects must run there
        gc.collect()
        self._at_trim = (served, _open_files())
        if _trim is not None:
            await asyncio.to_thread(_trim, 0)
        return True


def _open_files() -> int:
    """Open descriptors (sockets among them); -1 where /proc is not there."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1
