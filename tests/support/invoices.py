"""Foreign bolt11 invoices for melt tests: well formed, signed by a throwaway node key.

FakeWallet pays any well-formed invoice, and paying the mint's own mint-quote invoice
is racy under FakeWallet, so melts in tests pay invoices made here.
"""

from __future__ import annotations

import secrets
import time

import bolt11
from bolt11 import Bolt11, MilliSatoshi, Tag, TagChar, Tags


def fake_invoice(amount_sat: int, *, description: str = "test") -> str:
    """A regtest (bcrt) invoice for ``amount_sat`` with a random payment hash."""
    if amount_sat < 1:
        raise ValueError("an invoice must ask for at least 1 sat")
    invoice = Bolt11(
        currency="bcrt",
        date=int(time.time()),
        amount_msat=MilliSatoshi(amount_sat * 1000),
        tags=Tags(
            [
                Tag(TagChar.payment_hash, secrets.token_hex(32)),
                Tag(TagChar.description, description),
                Tag(TagChar.payment_secret, secrets.token_hex(32)),
            ]
        ),
    )
    encoded: str = bolt11.encode(invoice, secrets.token_hex(32))
    return encoded
