"""The operator's books as the contract shows them (section 13): per mint and in total,
with an audit. Shared by the admin API and ``routstr-node earnings``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mints.directory import MintDirectory
from wallet import AuditReport, Books, PayoutRow


@dataclass(frozen=True, slots=True)
class AuditSeen:
    """An audit's verdict and when it ran."""

    balanced: bool
    difference_msat: int
    at: int
    problems: tuple[str, ...]

    @classmethod
    def of(cls, report: AuditReport) -> AuditSeen:
        return cls(
            report.balanced, report.difference_msat, int(time.time()), tuple(report.problems)
        )

    def view(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "difference_msat": self.difference_msat,
            "at": self.at,
            "problems": list(self.problems),
        }


def books_view(books: Books, mints: MintDirectory, audit: AuditSeen) -> dict[str, Any]:
    return {
        "mints": [
            {
                "url": m.url,
                "custody_msat": m.custody_msat,
                "liabilities_msat": m.liabilities_msat,
                "earnings_msat": m.earnings_msat,
                "withdrawable_msat": m.withdrawable_msat,
                "in_payout_msat": m.in_payout_msat,
                "trusted": mints.is_trusted(m.url),
            }
            for m in books.mints
        ],
        "totals": {
            "custody_msat": sum(m.custody_msat for m in books.mints),
            "liabilities_msat": sum(m.liabilities_msat for m in books.mints),
            "earnings_msat": books.earnings_msat,
            "withdrawable_msat": books.withdrawable_msat,
            "in_payout_msat": sum(m.in_payout_msat for m in books.mints),
        },
        "audit": audit.view(),
    }


def payout_view(row: PayoutRow) -> dict[str, Any]:
    """A payout as listed (the panel's "payouts made"); the token is the operator's own."""
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "mint": row.mint_url,
        "amount": row.amount_sat if row.amount_sat is not None else row.asked_sat,
        "fee": row.fee_sat,
        "destination": row.destination,
        "cashu_token": row.token,
        "error": row.error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def withdrawal_answer(row: PayoutRow) -> tuple[int, dict[str, Any]]:
    """The contract's answer to a withdrawal: a token, or an invoice paid (or pending)."""
    if row.token is not None:
        return 200, {
            "cashu_token": row.token,
            "amount": row.amount_sat,
            "mint": row.mint_url,
            "fee": row.fee_sat,
        }
    if row.state == "paid":
        return 200, {"paid": True, "amount": row.amount_sat, "fee": row.fee_sat}
    return 202, {"paid": False, "pending": True, "amount": row.asked_sat}
