"""Run one money operation of the node's wallet in a process of its own, to crash it.

    python fault_runner.py DATA_DIR MINT_URL receive TOKEN
    python fault_runner.py DATA_DIR MINT_URL send ACCOUNT_ID AMOUNT_SAT
    python fault_runner.py DATA_DIR MINT_URL melt ACCOUNT_ID INVOICE
    python fault_runner.py DATA_DIR MINT_URL invoice AMOUNT_SAT

With ROUTSTR_TEST_FAULT naming a fault point (wallet/faults.py, read at import) the
process SIGKILLs itself there. Before the operation it prints one JSON line of what a
test needs to know afterwards (the melt quote id); after it, one line of the outcome.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from mints.directory import MintDirectory
from wallet.service import WalletService


def database_url_for(data_dir: Path) -> str:
    """As support.postgres.database_url_for (this script runs without the tests' path)."""
    marker = data_dir / ".test-database-url"
    return marker.read_text().strip() if marker.exists() else ""


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def run(data_dir: Path, mint_url: str, operation: str, args: list[str]) -> None:
    mints = MintDirectory([mint_url])
    service = WalletService(data_dir, mints, database_url_for(data_dir))
    try:
        await service.open()
        if operation == "receive":
            (token,) = args
            account = await service.create_account(await mints.check_token(token))
            _say(done="receive", account_id=account.account_id, msat=account.credited_msat)
        elif operation == "send":
            account_id, amount = (int(a) for a in args)
            sent = await service.withdraw_token(account_id, amount)
            _say(done="send", token=sent.token, amount=sent.amount_sat, fee=sent.fee_sat)
        elif operation == "melt":
            account_id_text, invoice = args
            quote = await service.custody.melt_quote(mint_url, invoice)
            _say(quote=quote.quote, amount=quote.amount, fee_reserve=quote.fee_reserve)
            result = await service.custody.melt(int(account_id_text), mint_url, quote)
            _say(done="melt", state=result.state, fee=result.fee_sat)
        elif operation == "invoice":
            (amount,) = args
            invoice = await service.create_invoice(int(amount))
            _say(invoice_id=invoice.invoice_id, secret=invoice.secret)
            for _ in range(200):  # FakeWallet pays at once; minting follows the refresh
                record = await service.invoice(invoice.invoice_id)
                if record.state not in ("unpaid",):
                    break
                await asyncio.sleep(0.05)
            _say(done="invoice", state=record.state)
        else:
            raise SystemExit(f"unknown operation {operation!r}")
    finally:
        await service.close()
        await mints.close()


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        raise SystemExit(__doc__)
    asyncio.run(run(Path(argv[0]), argv[1], argv[2], argv[3:]))


if __name__ == "__main__":
    main(sys.argv[1:])
