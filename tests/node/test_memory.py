"""The quiet-node heap trim: when it runs, and that it frees cyclic garbage."""

from __future__ import annotations

import gc
import os
import weakref

from routstr_node.memory import HeapTrimmer


def test_a_trim_is_due_only_once_the_node_is_quiet_after_work() -> None:
    trimmer = HeapTrimmer()
    assert not trimmer.due(served=5, open_streams=0), "the first look: quiet since when?"
    assert trimmer.due(served=5, open_streams=0), "nothing answered since the last look"
    trimmer = HeapTrimmer()
    trimmer.due(served=5, open_streams=1)
    assert not trimmer.due(served=5, open_streams=1), "a stream is open: not quiet"
    assert not trimmer.due(served=6, open_streams=0), "a request since the last look"
    assert trimmer.due(served=6, open_streams=0)


async def test_a_trim_collects_cycles_and_is_not_repeated_on_an_idle_node() -> None:
    trimmer = HeapTrimmer()
    trimmer.due(served=3, open_streams=0)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    alive = weakref.ref(a)
    gc.disable()  # only the trim may collect them
    try:
        del a, b
        assert alive() is not None
        assert await trimmer.trim_if_due(served=3, open_streams=0)
        assert alive() is None
    finally:
        gc.enable()
    trimmer.due(served=3, open_streams=0)
    assert not await trimmer.trim_if_due(served=3, open_streams=0), "nothing changed since"


async def test_connections_closing_on_an_idle_node_make_a_trim_due_again() -> None:
    """Idle upstream connections close after their keep-alive, long after the last
    request: their transports are garbage the previous trim could not free."""
    trimmer = HeapTrimmer()
    trimmer.due(served=3, open_streams=0)
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    try:
        assert await trimmer.trim_if_due(served=3, open_streams=0)
        assert not trimmer.due(served=3, open_streams=0)
    finally:
        for fd in files:
            os.close(fd)
    assert trimmer.due(served=3, open_streams=0)
