"""The custody invariant, checked against the mints (CONTRACT §8).

Unspent proofs held (NUT-07 at each mint) + proofs in flight
= account balances + reserved + unclaimed change + node earnings, to the msat.
The journal is checked too: its running sums must equal every stored total.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mints.directory import MintDirectory
from mints.errors import MintError
from wallet.store import WalletStore


@dataclass
class AuditReport:
    balanced: bool
    difference_msat: int
    custody_unspent_msat: int
    # proofs at a mint that could not be asked, counted as stored: the difference then
    # shows only what was found wrong, and ``balanced`` stays false until they are checked
    unchecked_msat: int
    in_flight_msat: int
    balances_msat: int
    reserved_msat: int
    unclaimed_change_msat: int
    earnings_msat: int
    journal_consistent: bool
    pending_operations: int
    mints: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def audit(store: WalletStore, mints: MintDirectory) -> AuditReport:
    """Compare what the mints say the node holds with what the ledger owes."""
    snap = await store.audit_snapshot()
    problems: list[str] = []
    per_mint: dict[str, dict[str, int]] = {}
    held_sat = 0
    unchecked_sat = 0
    stored_custody_sat = snap.in_flight_sat
    for mint_url, proofs in snap.unspent.items():
        stored = sum(a for _, a in proofs)
        stored_custody_sat += stored
        client = mints.held_client(mint_url)
        try:
            states = await client.check_state([y for y, _ in proofs])
        except MintError as exc:
            problems.append(f"{mint_url}: cannot check proof states: {exc.message}")
            per_mint[mint_url] = {"stored_sat": stored, "unspent_sat": 0, "unchecked_sat": stored}
            unchecked_sat += stored
            continue
        unspent_here = sum(a for y, a in proofs if states.get(y) == "UNSPENT")
        not_unspent = sum(1 for y, _ in proofs if states.get(y) != "UNSPENT")
        if not_unspent:
            problems.append(f"{mint_url}: {not_unspent} proofs the node holds are not unspent")
        held_sat += unspent_here
        per_mint[mint_url] = {"stored_sat": stored, "unspent_sat": unspent_here}
    left = (held_sat + unchecked_sat + snap.in_flight_sat) * 1000
    right = snap.balances + snap.reserved + snap.unclaimed_change + snap.earnings
    j_custody, j_balance, j_reserved, j_earnings = snap.journal
    journal_ok = (
        j_custody == stored_custody_sat * 1000
        and j_balance == snap.balances + snap.unclaimed_change
        and j_reserved == snap.reserved
        and j_earnings == snap.earnings
    )
    if not journal_ok:
        problems.append("the journal's sums do not match the stored totals")
    difference = left - right
    return AuditReport(
        balanced=difference == 0 and journal_ok and not problems,
        difference_msat=difference,
        custody_unspent_msat=held_sat * 1000,
        unchecked_msat=unchecked_sat * 1000,
        in_flight_msat=snap.in_flight_sat * 1000,
        balances_msat=snap.balances,
        reserved_msat=snap.reserved,
        unclaimed_change_msat=snap.unclaimed_change,
        earnings_msat=snap.earnings,
        journal_consistent=journal_ok,
        pending_operations=snap.pending_operations,
        mints=per_mint,
        problems=problems,
    )
