"""A charged request never goes unrecorded: records lost in a crash come back at start.

The charge that settles a request's reservation names the request (id, route, model,
provider) in the same UPDATE, inside the money's transaction; so does the record of
a stream's delivered output that a restart charges. A record is written later, in a
batch, to its own file: a node killed in between charged the request and lost the
record. At start, every charged reservation after the last one known to be recorded
is looked up among the records, and a missing one is rebuilt from the ledger (no
latency, no token counts: the ledger knows the money only).
"""

from __future__ import annotations

import logging
import time

from routstr_node.payment import PaymentMode
from routstr_node.records.model import Counted, UsageRecord
from routstr_node.records.store import UsageStore
from wallet import ChargedRequest, Ledger

log = logging.getLogger(__name__)

_ACCOUNT_KINDS = {"key": PaymentMode.ACCOUNT, "token": PaymentMode.TOKEN}
_REBUILT_STATUS = 200  # a charged request delivered an answer (or part of a stream)
_PAGE = 5000
SHARED_SETTLE_S = 3600  # shared store: the mark moves past charges at least this old


def rebuilt(charged: ChargedRequest) -> UsageRecord:
    tag = charged.tag
    counted = Counted()
    return UsageRecord(
        request_id=tag.request_id,
        created=charged.settled_at,
        account_id=charged.account_id,
        mode=_ACCOUNT_KINDS.get(charged.account_kind, PaymentMode.XCASHU).value,
        route=tag.route,
        model=tag.model,
        provider=tag.provider,
        status=_REBUILT_STATUS,
        latency_ms=None,
        first_byte_ms=None,
        input_tokens=counted.input_tokens,
        output_tokens=counted.output_tokens,
        units=counted.units,
        unit=counted.unit,
        cost_msat=charged.charged_msat,
        reservation_id=charged.reservation_id,
    )


async def rebuild_lost_records(
    store: UsageStore, ledger: Ledger, retention_days: int, *, shared: bool = False
) -> int:
    """Write the records missing for charged requests; how many were missing.

    ``shared``: other node processes write to the same store (PostgreSQL). Their
    newest records may still be in their batches: such a record is rebuilt too, and
    the full one replaces it when its batch comes. The mark moves only past charges an
    hour old, so a request still open in another process is looked at again later."""
    now = int(time.time())
    since = now - retention_days * 86400
    mark_before = now - SHARED_SETTLE_S if shared else None
    after = mark = await store.checked_through()
    held = False
    missing_total = 0
    while True:
        charged = await ledger.charged_requests_after(after, since, _PAGE)
        if not charged:
            break
        known = await store.known_reservations([c.reservation_id for c in charged])
        missing = [rebuilt(c) for c in charged if c.reservation_id not in known]
        if missing:
            await store.add(missing)
            missing_total += len(missing)
        for c in charged:
            if mark_before is not None and c.settled_at >= mark_before:
                held = True  # the mark stays before the first recent charge
            if not held:
                mark = c.reservation_id
        after = charged[-1].reservation_id
        await store.set_checked_through(mark)
    if missing_total:
        log.warning(
            "%d usage records were lost (the node stopped before writing them):"
            " rebuilt from the ledger",
            missing_total,
        )
    return missing_total
