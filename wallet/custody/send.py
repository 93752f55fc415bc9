"""Sending: a token of N sat out of custody, paid from an account."""

from __future__ import annotations

from dataclasses import dataclass

from mints.client import MintClient
from mints.curve import Point
from mints.errors import ProtocolError
from mints.keysets import amount_split
from mints.models import BlindSignature
from mints.token import encode_token
from wallet import blinding
from wallet.custody.base import CUSTODY_WAITS_S, SELECTION_ATTEMPTS, CustodyBase
from wallet.errors import (
    InsufficientBalance,
    InsufficientCustody,
    InvalidAmount,
    OperationInFlight,
)
from wallet.faults import fault_point
from wallet.operations import Intent, Outcome, OutputRole, OutputRow, Resolution, SendIntent
from wallet.records import StoredProof
from wallet.selection import Coin, Selection, select_covering, select_exact

# a token travels in headers (X-Cashu change, X-Cashu payments): handed over as found in a
# custody of many small proofs it grew past what clients read (one change token of ~60
# proofs was over aiohttp's 8,190-byte header line). Past the amount's own denominations
# plus these, the proofs are swapped for the amount's denominations instead.
EXTRA_PROOFS_WITHOUT_SWAP = 4


@dataclass(frozen=True, slots=True)
class SentToken:
    token: str
    amount_sat: int
    fee_sat: int
    mint_url: str


class Sending(CustodyBase):
    """Tokens out of custody: exact proofs handed over, or a swap for the amount and change."""

    async def send(
        self,
        account_id: int,
        mint_url: str,
        amount_sat: int | None,
        *,
        purpose: str,
        legacy: bool = False,
    ) -> SentToken:
        """Make a token worth ``amount_sat`` (None: all the account can pay) and charge it.

        The account pays the token's value plus the mint's input fee for the swap.
        """
        client = self.client_for(mint_url)
        return await self._on_current_keyset(
            client, lambda: self._send(account_id, client, amount_sat, purpose, legacy)
        )

    async def _send(
        self,
        account_id: int,
        client: MintClient,
        amount_sat: int | None,
        purpose: str,
        legacy: bool,
    ) -> SentToken:
        fee_ppk = await self._fee_ppk(client)
        waits = iter(CUSTODY_WAITS_S)
        every_coin = False
        for _ in range(SELECTION_ATTEMPTS + len(CUSTODY_WAITS_S) + 1):
            try:
                # selecting proofs and locking them is one step per mint, never across a
                # mint call
                async with self._selection_lock(client.url):
                    coins, left_out, available = await self._coins_and_balance(
                        client.url, account_id, every_coin=every_coin
                    )
                    try:
                        amount, plan = _plan_send(coins, fee_ppk, amount_sat, available // 1000)
                    except InsufficientCustody:
                        if not left_out:
                            raise
                        every_coin = True  # a few of each amount were not enough: all of them
                        continue
                    if isinstance(plan, tuple):
                        sent = await self._send_exact(
                            account_id, client.url, amount, plan, purpose, legacy
                        )
                        if sent is not None:
                            return sent
                        continue
                    written = await self._write_swap(
                        account_id, client, amount, plan, purpose, legacy
                    )
            except InsufficientCustody:
                await self._wait_for_change(client.url, waits)
                continue
            except InsufficientBalance as exc:
                # "all" was planned on a balance a request has just reserved from: plan again
                if amount_sat is not None or exc.available_msat < 1000:
                    raise
                continue
            if written is not None:
                return await self._run_swap(client, *written)
        raise InsufficientCustody("custody changed under every attempt to select proofs")

    async def _send_exact(
        self,
        account_id: int,
        mint_url: str,
        amount: int,
        coins: tuple[Coin, ...],
        purpose: str,
        legacy: bool,
    ) -> SentToken | None:
        """Hand over proofs worth exactly ``amount`` without a mint call."""
        token = await self.store.send_exact(
            account_id,
            mint_url,
            amount,
            [c.id for c in coins],
            purpose,
            lambda proofs: encode_token(mint_url, proofs, legacy=legacy),
        )
        return None if token is None else SentToken(token, amount, 0, mint_url)

    async def _write_swap(
        self,
        account_id: int,
        client: MintClient,
        amount: int,
        selection: Selection,
        purpose: str,
        legacy: bool,
    ) -> tuple[int, list[StoredProof], list[OutputRow]] | None:
        """Reserve, lock the inputs and write the swap down; None if the inputs were taken."""
        keyset = await client.active_keyset()
        change = selection.total - amount - selection.fee
        send_outputs = await self.prepare(keyset, amount_split(amount))
        keep_outputs = await self.prepare(keyset, amount_split(change))
        rows = [OutputRow(OutputRole.SEND, o) for o in send_outputs]
        rows += [OutputRow(OutputRole.KEEP, o) for o in keep_outputs]
        cost_msat = (amount + selection.fee) * 1000
        ids = [c.id for c in selection.coins]
        intent = SendIntent(account_id, purpose, amount, selection.fee, legacy)
        return await self._write_locked(intent, client, purpose, cost_msat, rows, ids)

    async def _run_swap(
        self,
        client: MintClient,
        op_id: int,
        inputs: list[StoredProof],
        rows: list[OutputRow],
    ) -> SentToken:
        with self._live(op_id):
            fault_point("send:written")
            answer = await self._swap_written(
                client, op_id, [s.proof for s in inputs], rows, on_refused=self.revert_send
            )
            if isinstance(answer, Resolution):
                return await self._sent_after(op_id, answer)
            signatures, terms = answer
            fault_point("send:swapped")
            return await self.complete_send(op_id, rows, signatures, terms=terms)

    async def _sent_after(self, op_id: int, resolution: Resolution) -> SentToken:
        """What a send whose answer was lost came to, for its request."""
        match resolution.outcome:
            case Outcome.DONE:
                op = await self.store.operation(op_id)
                token = await self.store.operation_token(op_id)
                intent = _send_intent(op.intent, op_id)
                return SentToken(token, intent.amount_sat, intent.fee_sat, op.mint_url)
            case Outcome.FAILED:
                raise resolution.refusal or ProtocolError(
                    "the node's proofs for this were spent elsewhere"
                )
            case Outcome.PENDING:
                raise OperationInFlight(
                    "the mint has not answered yet; the withdrawal finishes by itself (its"
                    " token is then listed at GET /v1/wallet/withdrawals) or is undone"
                )

    async def complete_send(
        self,
        op_id: int,
        rows: list[OutputRow],
        signatures: list[BlindSignature],
        *,
        terms: list[Point | None] | None = None,
    ) -> SentToken:
        op = await self.store.operation(op_id)
        intent = _send_intent(op.intent, op_id)
        client = self.client_for(op.mint_url)
        stored = await blinding.unblind_rows(client, rows, signatures, terms=terms)
        roles = [r.role for r in rows]
        send = [s for s, role in zip(stored, roles, strict=True) if role is OutputRole.SEND]
        keep = [s for s, role in zip(stored, roles, strict=True) if role is OutputRole.KEEP]
        token = encode_token(op.mint_url, [s.proof for s in send], legacy=intent.legacy)
        stored_token = await self.store.complete_send(op, keep, send, token)
        return SentToken(stored_token, intent.amount_sat, intent.fee_sat, op.mint_url)


def _send_intent(intent: Intent, op_id: int) -> SendIntent:
    if not isinstance(intent, SendIntent):
        raise TypeError(f"operation {op_id} is not a send")
    return intent


def _plan_send(
    coins: list[Coin], fee_ppk: dict[str, int], amount_sat: int | None, available_sat: int
) -> tuple[int, tuple[Coin, ...] | Selection]:
    """How to make the token: exact coins (no swap) or a covering selection to swap."""
    if amount_sat is not None and (type(amount_sat) is not int or amount_sat <= 0):
        raise InvalidAmount("amount must be a positive integer of sat")
    amount = available_sat if amount_sat is None else amount_sat
    if amount > available_sat:
        raise InsufficientBalance(
            f"the account can pay {available_sat} sat, not {amount}",
            needed_msat=amount * 1000,
            available_msat=available_sat * 1000,
        )
    if amount <= 0:
        raise InsufficientBalance("nothing to send", needed_msat=1000, available_msat=0)
    as_they_are: tuple[int, tuple[Coin, ...]] | None = None  # many proofs, but no fee
    for _ in range(4):
        exact = select_exact(coins, amount)
        if exact is not None:
            if len(exact) <= len(amount_split(amount)) + EXTRA_PROOFS_WITHOUT_SWAP:
                return amount, exact
            as_they_are = as_they_are or (amount, exact)
        selection = select_covering(coins, amount, fee_ppk)
        if selection is not None and amount + selection.fee <= available_sat:
            return amount, selection
        if selection is None or amount_sat is not None or available_sat <= selection.fee:
            break
        amount = available_sat - selection.fee  # everything: the swap's fee comes out of it
    if as_they_are is not None:
        return as_they_are
    if selection is None:
        raise InsufficientCustody("the node holds too little at this mint")
    raise InsufficientBalance(
        f"the account cannot pay {amount} sat plus the mint's fee",
        needed_msat=amount * 1000,
        available_msat=available_sat * 1000,
    )
