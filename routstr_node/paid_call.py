"""A paid request's money, from its reservation to its settlement and change, on every route.

    async with PaidCall(request, node, most_msat, model_id) as call:
        call.answered_by(candidate)    # whose price is charged, named in the answer
        call.relayed(output)           # a stream's progress: what reached the client
        cost = await call.settle(cost, counted)  # once, with what the answer cost (capped)
        headers = call.answer_headers()

Entering finds the payer and reserves ``most_msat`` (a 402 when the payer cannot cover
it: then nothing is held, and an X-Cashu token's credit comes back as change). Leaving
without a settlement (an upstream failure, a client error, a cancellation) charges what
already reached the client (nothing, when nothing did) and releases the rest; an error
leaving the block gets the change and the provider in its headers. The settlement is
shielded from cancellation: a reservation is charged or released exactly once.

The call also makes the request's usage record (``usage_record``, once the client has
its answer): the charge names the request in the ledger (a RequestTag), so a record
lost in a crash is rebuilt from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Protocol

from aiohttp import web

from routstr_node.errors import ApiError
from routstr_node.payment import Payer, PaymentMode, payment_required, resolve_payer
from routstr_node.pricing import Cost
from routstr_node.records.model import Counted, UsageRecord
from routstr_node.routing import Candidate
from routstr_node.state import REQUEST_ID, NodeState
from wallet import InsufficientBalance, RequestTag

log = logging.getLogger(__name__)

NOTHING = Cost(0, 0, 0)
# how often a stream's delivered output is written down beside its reservation
DELIVERED_RECORD_EVERY_S = 1.0
# after an X-Cashu token was redeemed: the OpenAI SDKs retry 5xx and 429, and a retry
# would send the spent token again and lose sight of this answer's change
_NO_RETRY = {"X-Should-Retry": "false"}


class Output(Protocol):
    """What a stream has relayed so far, priced at the answering provider."""

    def cost(self) -> Cost: ...


class PaidCall:
    """One paid request's money; see the module's docstring."""

    def __init__(
        self, request: web.Request, node: NodeState, most_msat: int, model_id: str
    ) -> None:
        self._request = request
        self.node = node
        self.model_id = model_id
        self.counted = Counted()  # what the charge was for (tokens or media units)
        self.first_byte_at: float | None = None  # perf_counter(): a stream's first write
        self.reserved_msat = most_msat
        self.payer: Payer | None = None
        self.provider: str | None = None
        self.charged: Cost | None = None
        self.change_token: str | None = None
        self._reservation_id: int | None = None
        self._output: Output | None = None
        self._next_record = time.monotonic() + DELIVERED_RECORD_EVERY_S
        self._recording: asyncio.Future[None] | None = None
        self._tracked = False  # counted among the node's unsettled calls
        self._most_msat = most_msat  # the cap of the charge: at the provider, once known

    async def __aenter__(self) -> PaidCall:
        node, most = self.node, self.reserved_msat
        payer = await resolve_payer(self._request, node, most)
        self.payer = payer
        try:
            # X-Cashu: held with the token's credit, unless that fell short
            self._reservation_id = (
                payer.reservation_id
                if payer.reservation_id is not None
                else await node.wallet.ledger.reserve(payer.account_id, most)
            )
        except InsufficientBalance as exc:
            # the NUT-18 request asks for the whole request: paid as X-Cashu, a token pays
            # for its own request alone, so a token worth only the shortfall would not do
            error = payment_required(
                node,
                most,
                f"insufficient balance: this request may cost up to {most} msat,"
                f" {exc.available_msat} msat are available",
                code="insufficient_balance",
            )
            if payer.mode is PaymentMode.XCASHU:
                error.headers.update(_NO_RETRY)
                change = await self._change()
                if change:
                    error.headers["X-Cashu-Change"] = change
            raise error from None
        node.unsettled.add()
        self._tracked = True
        self._request[PAID_CALL] = self  # its usage record is made when the answer is out
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.charged is None:
            delivered = self._output.cost() if self._output is not None else NOTHING
            await asyncio.shield(self.settle(delivered))
        if isinstance(exc, ApiError):
            exc.headers.update(self.failure_headers())

    def answered_by(self, candidate: Candidate) -> None:
        """The provider whose answer this is (or whose failure, if it is the last)."""
        self.provider = candidate.name
        self._most_msat = min(candidate.most_msat, self.reserved_msat)

    def relayed(self, output: Output) -> None:
        """Progress of a stream, told on each write: ``output`` is what reached the
        client so far (charged if the call ends before its settlement: the client left).

        About once a second its cost is written down beside the reservation (in the
        wallet's group commit, not awaited here): a node killed mid-stream charges that
        at its next start, so a crash costs the operator about a second of output."""
        self._output = output
        now = time.monotonic()
        if now < self._next_record or self._recording is not None:
            return
        self._next_record = now + DELIVERED_RECORD_EVERY_S
        self._recording = asyncio.ensure_future(self._record(output))

    async def _record(self, output: Output) -> None:
        assert self._reservation_id is not None
        delivered = min(output.cost().total_msat, self._most_msat)
        try:
            await self.node.wallet.ledger.record_delivered(
                self._reservation_id, delivered, self._tag()
            )
        except Exception as exc:  # a record is a safeguard: the settlement is the charge
            log.warning("delivered output not recorded now: %s", type(exc).__name__)
        finally:
            self._recording = None

    def delivered_cost(self) -> Cost:
        """What the output relayed so far costs (nothing before the first byte)."""
        return self._output.cost() if self._output is not None else NOTHING

    async def settle(self, cost: Cost, counted: Counted | None = None) -> Cost:
        """Charge ``cost`` and release the rest, once; an X-Cashu payment's remainder
        becomes its change. The charge is never more than the most the request could
        cost at the provider that answered (nor than the reservation). ``counted`` is
        what it was for (tokens, media units), for the usage record."""
        if self.charged is not None:
            return self.charged
        assert self.payer is not None and self._reservation_id is not None
        if counted is not None:
            self.counted = counted
        try:
            charge = min(cost.total_msat, self._most_msat)
            settlement = await self.node.wallet.ledger.settle(
                self._reservation_id, charge, self._tag()
            )
            charged = settlement.charged_msat
            if charged != cost.total_msat:
                input_part = min(cost.input_msat, charged)
                cost = Cost(input_part, charged - input_part, 0)
            self.charged = cost
            self.node.metrics.charged_msat += charged
            if self.payer.mode is PaymentMode.XCASHU:
                self.change_token = await self._change()
            return cost
        finally:
            if self._tracked:  # settled, or failed and left to the next start's release
                self._tracked = False
                self.node.unsettled.remove()

    def _tag(self) -> RequestTag:
        return RequestTag(
            self._request[REQUEST_ID], self._request.path, self.model_id, self.provider
        )

    def usage_record(
        self, status: int, created: int, started: float, ended: float
    ) -> UsageRecord | None:
        """The request's usage record, once the client got ``status``; ``started`` and
        ``ended`` are the request's perf_counter() times (None: nothing was reserved, so
        nothing was paid)."""
        if self.payer is None or self._reservation_id is None:
            return None
        latency_ms = int((ended - started) * 1000)
        first_byte_ms = latency_ms  # a whole answer: its first byte goes out at the end
        if self.first_byte_at is not None:
            first_byte_ms = min(latency_ms, int((self.first_byte_at - started) * 1000))
        counted = self.counted
        return UsageRecord(
            request_id=self._request[REQUEST_ID],
            created=created,
            account_id=self.payer.account_id,
            mode=self.payer.mode.value,
            route=self._request.path,
            model=self.model_id,
            provider=self.provider,
            status=status,
            latency_ms=latency_ms,
            first_byte_ms=first_byte_ms,
            input_tokens=counted.input_tokens,
            output_tokens=counted.output_tokens,
            units=counted.units,
            unit=counted.unit,
            cost_msat=self.charged.total_msat if self.charged is not None else 0,
            reservation_id=self._reservation_id,
        )

    async def _change(self) -> str | None:
        """The X-Cashu remainder as a token; stays claimable via refund if this fails."""
        assert self.payer is not None
        try:
            sent = await self.node.wallet.issue_change(
                self.payer.account_id, legacy=self.payer.legacy
            )
        except Exception as exc:
            log.warning(
                "change for account %s not issued now: %s",
                self.payer.account_id,
                type(exc).__name__,
            )
            return None
        return sent.token if sent is not None else None

    def answer_headers(self) -> dict[str, str]:
        """The money and the provider of a paid answer (set before it is sent)."""
        headers = {}
        if self.charged is not None:
            headers["X-Routstr-Cost-Msats"] = str(self.charged.total_msat)
        if self.change_token:
            headers["X-Cashu"] = self.change_token
        if self.provider is not None:
            headers["X-Routstr-Provider"] = self.provider
        return headers

    def failure_headers(self) -> dict[str, str]:
        """What an error answer after the reservation carries: the change, no retry of a
        spent token, and the provider that failed last."""
        headers = {}
        if self.payer is not None and self.payer.mode is PaymentMode.XCASHU:
            headers.update(_NO_RETRY)
        if self.change_token:
            headers["X-Cashu"] = self.change_token
        if self.provider is not None:
            headers["X-Routstr-Provider"] = self.provider
        return headers


PAID_CALL: web.RequestKey[PaidCall] = web.RequestKey("paid_call")
