"""Finishing operations a crash or a lost answer left pending.

The mint is the judge: NUT-07 says whether the inputs were spent, NUT-09 returns the
signatures it gave for outputs the node wrote down (derived from its seed). A spent
input with restorable outputs completes the operation through the very code the live
path uses; unspent inputs mean it never happened; pending ones are left for later.
A mint operation (Lightning in) has no inputs: its quote's state is the judge there
(see :func:`wallet.lightning_in.recover_mint`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from mints.errors import MintError
from mints.outputs import proof_y
from wallet.custody import Custody
from wallet.lightning_in import recover_mint
from wallet.sqlite import custody as sql
from wallet.sqlite.ledger import now

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    still_pending: list[int] = field(default_factory=list)


async def recover_all(custody: Custody) -> RecoveryReport:
    """Resolve every pending operation; run at start, before serving."""
    pending = await custody.db.read(sql.pending_operations)
    return await _recover(custody, [op.id for op in pending])


class StaleOperations:
    """While the node runs: pending operations no request of this process is working on,
    written down a while ago (a payment the mint left pending, an answer lost while the
    mint was away). Without this their holds would wait for the next start.

    The age keeps off an operation whose request is between writing it down and marking
    it live; the live mark keeps off one whose mint call takes long. One that stays
    pending round after round is asked about less and less often.
    """

    def __init__(self, custody: Custody) -> None:
        self.custody = custody
        self._stuck: dict[int, tuple[int, float]] = {}  # op id -> (rounds pending, next try)

    async def resolve(self, min_age_s: int) -> RecoveryReport:
        custody = self.custody
        ids = await custody.db.read(lambda c: sql.stale_operation_ids(c, now() - min_age_s))
        clock = time.monotonic()
        due = [
            i
            for i in ids
            if i not in custody.live_operations and self._stuck.get(i, (0, 0.0))[1] <= clock
        ]
        report = await _recover(custody, due)
        for op_id in report.completed + report.failed:
            self._stuck.pop(op_id, None)
        for op_id in report.still_pending:
            rounds = self._stuck.get(op_id, (0, 0.0))[0] + 1
            wait = 0.0 if rounds < _PATIENT_ROUNDS else min(_MAX_WAIT_S, 30.0 * 2**rounds)
            self._stuck[op_id] = (rounds, clock + wait)
        return report


_PATIENT_ROUNDS = 3  # rounds an operation is asked about at every beat before backing off
_MAX_WAIT_S = 3600.0


async def _recover(custody: Custody, op_ids: list[int]) -> RecoveryReport:
    report = RecoveryReport()
    for op_id in op_ids:
        try:
            outcome = await recover_operation(custody, op_id)
        except MintError as exc:
            log.warning("operation %s: mint error during recovery: %s", op_id, exc.message)
            outcome = "pending"
        except Exception:  # one operation must not keep the others from being resolved
            log.exception("operation %s: recovery failed; it stays pending", op_id)
            outcome = "pending"
        getattr(
            report, {"done": "completed", "failed": "failed"}.get(outcome, "still_pending")
        ).append(op_id)
    return report


async def recover_operation(custody: Custody, op_id: int) -> str:
    """Settle one operation; returns 'done', 'failed' or 'pending'."""
    op = await custody.db.read(lambda c: sql.operation(c, op_id))
    if op.state != "pending":
        return op.state
    rows = await custody.db.read(lambda c: sql.operation_outputs(c, op_id))
    client = custody.client_for(op.mint_url)

    if op.kind == "melt":
        return await _recover_melt(custody, op, rows)
    if op.kind == "mint":
        return await recover_mint(custody, op)

    if op.kind == "receive":
        ys = [proof_y(p.secret) for p in op.foreign_inputs]
    else:
        ys = [s.y for s in await custody.db.read(lambda c: sql.operation_inputs(c, op_id))]
    states = await client.check_state(ys) if ys else {}
    values = set(states.values())
    if "PENDING" in values:
        return "pending"
    if values <= {"UNSPENT"}:
        if op.kind == "receive":
            await custody.db.write(
                lambda c: sql.finish_operation(c, op_id, "failed", error="never reached the mint")
            )
        else:
            await custody.revert_send(op_id, "never reached the mint")
        return "failed"
    signed = await client.restore([r.output.message() for r in rows]) if rows else {}
    found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
    if rows and not found:
        # the inputs went elsewhere (a double spend by the token's sender)
        if op.kind == "receive":
            await custody.db.write(
                lambda c: sql.finish_operation(c, op_id, "failed", error="inputs spent elsewhere")
            )
            return "failed"
        log.error("operation %s: own proofs spent elsewhere; custody is short", op_id)
        await custody.db.write(lambda c: _mark_lost(c, op_id))
        return "failed"
    if op.kind == "receive":
        await custody.complete_receive(op_id, [r for r, _ in found], [s for _, s in found])
    else:
        await custody.complete_send(op_id, [r for r, _ in found], [s for _, s in found])
    return "done"


async def _recover_melt(custody: Custody, op: sql.Operation, rows: list[sql.OutputRow]) -> str:
    client = custody.client_for(op.mint_url)
    assert op.quote_id is not None
    quote = await client.get_melt_quote(op.quote_id)
    if quote.state == "PAID":
        signed = await client.restore([r.output.message() for r in rows]) if rows else {}
        found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
        await custody.complete_melt(
            op.id, [r for r, _ in found], [s for _, s in found], quote.payment_preimage
        )
        return "done"
    if quote.state == "PENDING":
        return "pending"
    inputs = await custody.db.read(lambda c: sql.operation_inputs(c, op.id))
    states = await client.check_state([s.y for s in inputs])
    if all(v == "UNSPENT" for v in states.values()):
        await custody.revert_send(op.id, "the invoice was not paid")
        return "failed"
    return "pending"


def _mark_lost(c: sqlite3.Connection, op_id: int) -> None:
    sql.settle_inputs(c, op_id, "spent")
    sql.finish_operation(c, op_id, "failed", error="inputs spent elsewhere")
