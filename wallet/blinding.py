"""Turning a mint's signatures on written-down outputs into proofs ready to store.

One place for it: receive, send, melt change and Lightning mints all end here.
The curve work stays on the event loop thread: handing it to worker threads was
measured slower (a thread hop costs more than the parallel part saves, 6 proofs).
"""

from __future__ import annotations

from mints.client import MintClient
from mints.models import BlindSignature, Keyset
from mints.outputs import proof_y, unblind
from wallet.sqlite.custody import OutputRow, StoredProof


async def unblind_rows(
    client: MintClient,
    rows: list[OutputRow],
    signatures: list[BlindSignature],
    *,
    blank: bool = False,
) -> list[StoredProof]:
    """Proofs with their Y, checking each DLEQ proof the mint gave.

    ``blank`` outputs (NUT-08 melt change) take the amounts the mint chose to sign.
    """
    keysets: dict[str, Keyset] = {}
    stored = []
    for row, sig in zip(rows, signatures, strict=True):
        keyset_id = row.output.keyset_id
        if keyset_id not in keysets:
            keysets[keyset_id] = await client.keyset(keyset_id)
        proof = unblind(row.output, sig, keysets[keyset_id], blank=blank)
        stored.append(StoredProof(proof, row.output.y or proof_y(proof.secret)))
    return stored
