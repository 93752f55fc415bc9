"""Finishing operations a crash or a lost answer left pending: at start, and while the
node runs. Each goes through :meth:`wallet.custody.Custody.resolve`, the one rule: the
identical request sent again, the mint as the judge.

At start this runs beside serving, not before it: a mint that hangs holds up only the
operations at that mint (each mint's are resolved in their own task), and only what
touches their proofs waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from wallet.custody import Custody
from wallet.operations import Outcome

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    still_pending: list[int] = field(default_factory=list)

    def add(self, op_id: int, outcome: Outcome) -> None:
        match outcome:
            case Outcome.DONE:
                self.completed.append(op_id)
            case Outcome.FAILED:
                self.failed.append(op_id)
            case Outcome.PENDING:
                self.still_pending.append(op_id)


async def recover_all(custody: Custody) -> RecoveryReport:
    """Resolve every pending operation, each mint's in a task of its own."""
    pending = await custody.store.pending_operations()
    by_mint: dict[str, list[int]] = {}
    for op in pending:
        by_mint.setdefault(op.mint_url, []).append(op.id)
    reports = await asyncio.gather(*(_recover(custody, ids) for ids in by_mint.values()))
    merged = RecoveryReport()
    for report in reports:
        merged.completed += report.completed
        merged.failed += report.failed
        merged.still_pending += report.still_pending
    for ids in (merged.completed, merged.failed, merged.still_pending):
        ids.sort()
    return merged


class StaleOperations:
    """While the node runs: pending operations no request of this process is working on,
    written down a while ago (a payment the mint left pending, an answer lost while the
    mint was away). Without this their holds would wait for the next start.

    The age keeps off an operation whose request is between writing it down and marking
    it live; the live mark keeps off one whose mint call takes long. An operation a
    request gave up waiting for is asked about at once, whatever its age. One that stays
    pending round after round is asked about less and less often.
    """

    def __init__(self, custody: Custody) -> None:
        self.custody = custody
        self._stuck: dict[int, tuple[int, float]] = {}  # op id -> (rounds pending, next try)

    async def resolve(self, min_age_s: int) -> RecoveryReport:
        custody = self.custody
        ids = await custody.store.stale_operation_ids(int(time.time()) - min_age_s)
        clock = time.monotonic()
        due = [
            i
            for i in sorted({*ids, *custody.unresolved})
            if i not in custody.live_operations and self._stuck.get(i, (0, 0.0))[1] <= clock
        ]
        report = await _recover(custody, due)
        for op_id in report.completed + report.failed:
            self._stuck.pop(op_id, None)
            custody.unresolved.discard(op_id)
        for op_id in report.still_pending:
            rounds = self._stuck.get(op_id, (0, 0.0))[0] + 1
            wait = 0.0 if rounds < _PATIENT_ROUNDS else min(_MAX_WAIT_S, 30.0 * 2**rounds)
            self._stuck[op_id] = (rounds, clock + wait)
        return report


_PATIENT_ROUNDS = 3  # rounds an operation is asked about at every beat before backing off
_MAX_WAIT_S = 3600.0


async def _recover(custody: Custody, op_ids: Iterable[int]) -> RecoveryReport:
    report = RecoveryReport()
    for op_id in op_ids:
        try:
            resolution = await custody.resolve(op_id)
        except Exception:  # one operation must not keep the others from being resolved
            log.exception("operation %s: recovery failed; it stays pending", op_id)
            report.add(op_id, Outcome.PENDING)
            continue
        report.add(op_id, resolution.outcome)
    return report
