"""What receiving, sending and melting share: the custody's mints, outputs and locks,
writing an operation down with its inputs locked, sending a written swap, and undoing
or resolving an operation the mint did not clearly finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from mints.client import MintClient
from mints.curve import Point
from mints.directory import MintDirectory
from mints.errors import KeysetInactive, MintError, MintRefused, MintUnreachable
from mints.models import BlindSignature, Keyset, Proof
from mints.outputs import PreparedOutput
from wallet import blinding
from wallet.errors import InsufficientCustody
from wallet.operations import Outcome, OutputRow, Resolution, SpendIntent
from wallet.output_pool import OutputPool
from wallet.records import StoredProof
from wallet.selection import Coin
from wallet.store import COINS_PER_AMOUNT, WalletStore

log = logging.getLogger(__name__)
T = TypeVar("T")

SELECTION_ATTEMPTS = 5
CUSTODY_WAITS_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.5)


class _NotWritten(Exception):
    """The write of an operation was rolled back without an error for the caller."""


class CustodyBase:
    """The node's ecash at its trusted mints: the state every operation uses."""

    def __init__(self, store: WalletStore, mints: MintDirectory, seed: bytes) -> None:
        self.store = store
        self.mints = mints
        self.outputs = OutputPool(store, seed)
        self._selection_locks: dict[str, asyncio.Lock] = {}
        # operations a request of this process is sending or finishing: not for recovery
        self.live_operations: set[int] = set()
        # tokens a request of this process is redeeming, from before their operation is
        # written down (its id is known only once the write returns) to the end
        self._receiving: dict[str, int] = {}
        # operations a request gave up waiting for (the mint did not answer): the next
        # background round asks about them again, however young they are
        self.unresolved: set[int] = set()
        # one resolution of an operation at a time (the start, the background round, a
        # token presented again and a timed-out request may all reach for the same one)
        self._resolution_locks: dict[int, asyncio.Lock] = {}

    @contextlib.contextmanager
    def _live(self, op_id: int) -> Iterator[None]:
        self.live_operations.add(op_id)
        try:
            yield
        finally:
            self.live_operations.discard(op_id)

    @contextlib.contextmanager
    def _marking_live(self) -> Iterator[Callable[[int], None]]:
        """A mark for an operation being written down: live from inside its transaction
        (before any other reader sees it), unmarked again if the write fails. Once it is
        written, its request's :meth:`_live` ends the mark."""
        marked: list[int] = []

        def mark(op_id: int) -> None:
            marked.append(op_id)
            self.live_operations.add(op_id)

        try:
            yield mark
        except _NotWritten:
            for op_id in marked:
                self.live_operations.discard(op_id)
        except BaseException:
            for op_id in marked:
                self.live_operations.discard(op_id)
            raise

    @contextlib.contextmanager
    def _receiving_token(self, token_id: str) -> Iterator[None]:
        self._receiving[token_id] = self._receiving.get(token_id, 0) + 1
        try:
            yield
        finally:
            left = self._receiving.pop(token_id) - 1
            if left:
                self._receiving[token_id] = left

    def is_live(self, op_id: int, token_id: str | None = None) -> bool:
        """Whether a request of this process works on the operation (or its token)."""
        return op_id in self.live_operations or (
            token_id is not None and token_id in self._receiving
        )

    def client_for(self, mint_url: str) -> MintClient:
        """The mint's client; also for a mint no longer trusted where custody holds ecash."""
        return self.mints.held_client(mint_url)

    async def prepare(self, keyset: Keyset, amounts: list[int]) -> list[PreparedOutput]:
        if not amounts:
            return []
        return await self.outputs.take(keyset.id, amounts)

    async def _on_current_keyset(
        self, client: MintClient, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """``attempt`` once more when the mint refused its outputs because it rotated its
        keys: the refusal proves nothing happened, and the client has read the new keyset."""
        used = client.known_active_keyset()
        try:
            return await attempt()
        except KeysetInactive:
            current = await client.active_keyset()
            if used is not None and current.id == used.id:
                raise
            log.info("mint %s rotated its keyset: once more on %s", client.url, current.id)
            return await attempt()

    async def _fee_ppk(self, client: MintClient) -> dict[str, int]:
        """Each keyset's input fee at the mint (NUT-02: parts per thousand per proof)."""
        keysets = await client.keysets()
        return {k.id: k.input_fee_ppk for k in keysets.values()}

    async def _coins_and_balance(
        self, mint_url: str, account_id: int, *, every_coin: bool
    ) -> tuple[list[Coin], bool, int]:
        """Proofs at the mint to select from, whether some were left out (``every_coin``:
        none), and the account's balance (msat), read together."""
        per_amount = None if every_coin else COINS_PER_AMOUNT
        return await self.store.coins_and_balance(mint_url, account_id, per_amount)

    def _selection_lock(self, mint_url: str) -> asyncio.Lock:
        return self._selection_locks.setdefault(mint_url, asyncio.Lock())

    async def _wait_for_change(self, mint_url: str, waits: Iterator[float]) -> None:
        """Custody is short at a mint while other operations there are in flight: their
        change comes back within milliseconds, so wait a moment; otherwise it is short."""
        delay = next(waits, None)
        pending = await self.store.operations_in_flight(mint_url)
        if delay is None or not pending:
            raise InsufficientCustody(f"the node holds too little at {mint_url} for this")
        await asyncio.sleep(delay)

    async def _write_locked(
        self,
        intent: SpendIntent,
        client: MintClient,
        purpose: str,
        hold_msat: int,
        rows: list[OutputRow],
        proof_ids: list[int],
        *,
        quote_id: str | None = None,
    ) -> tuple[int, list[StoredProof], list[OutputRow]] | None:
        """One transaction: hold the account's money, write the operation down, lock its
        inputs. None when another operation took one of the inputs first."""
        with self._marking_live() as mark:
            written = await self.store.write_spend(
                intent, client.url, hold_msat, purpose, rows, proof_ids, quote_id, mark
            )
            if written is None:  # rolled back: its id may be given to the next one
                raise _NotWritten
        if written is None:
            return None
        op_id, inputs = written
        return op_id, inputs, rows

    async def _swap_written(
        self,
        client: MintClient,
        op_id: int,
        inputs: list[Proof],
        rows: list[OutputRow],
        *,
        on_refused: Callable[[int, str], Awaitable[None]],
    ) -> tuple[list[BlindSignature], list[Point | None]] | Resolution:
        """Send a written-down swap: the mint's signatures, or how the operation was
        resolved when its answer did not come.

        A refusal, or a connection that was never opened, proves the swap did not happen:
        ``on_refused`` closes it and the error goes to the caller. After anything else (a
        timeout, a lost answer) the mint may still carry it out, so the operation is never
        closed on a guess: :meth:`resolve` sends the identical swap again.

        While the mint works, the node does what needs no answer: the outputs' unblinding
        terms, and the next operations' outputs.
        """
        swap = asyncio.ensure_future(client.swap(inputs, [r.output.message() for r in rows]))
        try:
            terms = await blinding.unblinding_terms(client, rows, until=swap)
            if rows:
                await self.outputs.derive_ahead(rows[0].output.keyset_id, until=swap)
        except asyncio.CancelledError:  # while the mint works: as if its call was cancelled
            swap.cancel()
            raise
        try:
            return await swap, terms
        except MintRefused as exc:
            await on_refused(op_id, str(exc))
            raise
        except MintUnreachable as exc:
            if not exc.request_sent:
                await on_refused(op_id, str(exc))
                raise
            log.info("operation %s: %s; resolving it", op_id, exc.message)
        except MintError as exc:  # a malformed answer: the swap may have happened
            log.warning("operation %s: %s; resolving it", op_id, exc.message)
        return await self._resolve_for_request(op_id)

    async def revert_send(self, op_id: int, error: str) -> None:
        """The swap or melt never happened: inputs back to custody, reservation released."""
        await self.store.revert_spend(op_id, error)

    async def _fail(self, op_id: int, error: str) -> None:
        await self.store.fail_operation(op_id, error)

    def _resolution_lock(self, op_id: int) -> asyncio.Lock:
        if len(self._resolution_locks) > 10_000:
            self._resolution_locks = {k: v for k, v in self._resolution_locks.items() if v.locked()}
        return self._resolution_locks.setdefault(op_id, asyncio.Lock())

    async def resolve(self, op_id: int) -> Resolution:
        """Settle an operation whose outcome is unknown, by the one rule every path uses.

        It takes every kind of completion: the composed :class:`Custody` does it.
        """
        raise NotImplementedError

    async def resolve_unless_busy(self, op_id: int) -> Resolution:
        """:meth:`resolve`, or PENDING at once while another task is resolving it (the
        start-up recovery waiting on a hanging mint): a request touching it is told so
        now instead of waiting for that mint too."""
        if self._resolution_lock(op_id).locked():
            return Resolution(Outcome.PENDING)
        return await self.resolve(op_id)

    async def _resolve_for_request(self, op_id: int) -> Resolution:
        """:meth:`resolve` for a request whose mint call failed on the way: one that stays
        unresolved is left to the background rounds, which ask again soon."""
        resolution = await self.resolve(op_id)
        if resolution.outcome is Outcome.PENDING:
            self.unresolved.add(op_id)
        return resolution
