"""Turning a mint's signatures on written-down outputs into proofs ready to store.

One place for it: receive, send, melt change and Lightning mints all end here.
The curve work stays on the event loop thread: handing it to worker threads was
measured slower (a thread hop costs more than the parallel part saves, 6 proofs).
What does not need the mint's answer (−r·A for each output) is computed while the
mint is asked, one output per loop step, so the request goes out first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mints.client import MintClient
from mints.curve import Point
from mints.errors import ProtocolError
from mints.models import BlindSignature, Keyset
from mints.outputs import proof_y, unblind, unblinding_term
from wallet.sqlite.custody import OutputRow, StoredProof

log = logging.getLogger(__name__)


async def unblinding_terms(
    client: MintClient, rows: list[OutputRow], until: asyncio.Future[Any]
) -> list[Point | None]:
    """−r·A per output while ``until`` (the mint's answer) is awaited; None where not done.

    Never raises: a term that cannot be computed is left to :func:`unblind_rows`, which
    raises the same error on the path that handles it.
    """
    terms: list[Point | None] = []
    await asyncio.sleep(0)  # a request goes out in two loop steps: headers, then body
    for row in rows:
        await asyncio.sleep(0)
        if until.done():
            break
        try:
            keyset = await client.keyset(row.output.keyset_id)
            terms.append(unblinding_term(row.output, keyset))
        except ProtocolError:
            terms.append(None)
        except Exception as exc:  # e.g. the mint unreachable for its keys
            log.debug("unblinding term left for later: %s", type(exc).__name__)
            terms.append(None)
    return terms + [None] * (len(rows) - len(terms))


async def unblind_rows(
    client: MintClient,
    rows: list[OutputRow],
    signatures: list[BlindSignature],
    *,
    blank: bool = False,
    terms: list[Point | None] | None = None,
) -> list[StoredProof]:
    """Proofs with their Y, checking each DLEQ proof the mint gave.

    ``blank`` outputs (NUT-08 melt change) take the amounts the mint chose to sign.
    ``terms`` are what :func:`unblinding_terms` computed for these rows, if it ran.
    """
    keysets: dict[str, Keyset] = {}
    stored = []
    for i, (row, sig) in enumerate(zip(rows, signatures, strict=True)):
        keyset_id = row.output.keyset_id
        if keyset_id not in keysets:
            keysets[keyset_id] = await client.keyset(keyset_id)
        term = terms[i] if terms is not None else None
        proof = unblind(row.output, sig, keysets[keyset_id], blank=blank, term=term)
        stored.append(StoredProof(proof, row.output.y or proof_y(proof.secret)))
    return stored
