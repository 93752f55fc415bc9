"""A paid request between its reservation and its settlement, and upstream failures.

Shared by the plain and the streaming path so both settle, report and refund alike.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from routstr_node.errors import ApiError
from routstr_node.payment import Payer
from routstr_node.pricing import Cost, ModelPrice, cost_msat
from routstr_node.state import NodeState
from routstr_node.upstream import Upstream
from routstr_node.usage import TokenUsage, estimate_prompt_tokens, estimate_tokens

log = logging.getLogger(__name__)


@dataclass
class PaidCall:
    """One paid request between its reservation and its settlement."""

    node: NodeState
    path: str
    body: dict[str, Any]
    price: ModelPrice
    payer: Payer
    reservation_id: int
    reserved_msat: int
    settled: bool = False
    charged: Cost | None = None
    change_token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    _tracked: bool = True

    def __post_init__(self) -> None:
        self.node.unsettled.add()

    def own_count(self, output_text: str) -> TokenUsage:
        """The node's own count, for an answer without usage (the prompt read only then)."""
        return TokenUsage(estimate_prompt_tokens(self.body), estimate_tokens(output_text), False)

    async def settle(self, usage: TokenUsage | None) -> Cost:
        """Charge what the usage costs (capped at the reservation), exactly once."""
        if self.charged is not None:
            return self.charged
        try:
            return await self._settle(usage)
        finally:
            if self._tracked:  # settled, or failed and left to the next start's release
                self._tracked = False
                self.node.unsettled.remove()

    async def _settle(self, usage: TokenUsage | None) -> Cost:
        cost = (
            cost_msat(self.price, usage.input_tokens, usage.output_tokens)
            if usage is not None
            else Cost(0, 0, 0)
        )
        charge = min(cost.total_msat, self.reserved_msat)
        settlement = await self.node.wallet.ledger.settle(self.reservation_id, charge)
        charged = settlement.charged_msat
        if charged != cost.total_msat:
            input_part = min(cost.input_msat, charged)
            cost = Cost(input_part, charged - input_part, 0)
        self.charged = cost
        self.node.metrics.charged_msat += charged
        if self.payer.mode == "xcashu":
            self.change_token = await change_for(self.node, self.payer)
        self.settled = True
        return cost


async def change_for(node: NodeState, payer: Payer) -> str | None:
    """The X-Cashu remainder as a token; stays claimable via refund if this fails."""
    try:
        sent = await node.wallet.issue_change(payer.account_id, legacy=payer.legacy)
    except Exception as exc:
        log.warning(
            "change for account %s not issued now: %s", payer.account_id, type(exc).__name__
        )
        return None
    return sent.token if sent is not None else None


def usage_fields(path: str, usage: TokenUsage) -> dict[str, int]:
    """The counts of ``usage`` under the names of the endpoint's own usage object."""
    if path == "/v1/responses":
        names = ("input_tokens", "output_tokens")
    else:
        names = ("prompt_tokens", "completion_tokens")
    return {
        names[0]: usage.input_tokens,
        names[1]: usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def cost_json(cost: Cost) -> dict[str, int]:
    return {
        "total_msats": cost.total_msat,
        "input_msats": cost.input_msat,
        "output_msats": cost.output_msat + cost.request_msat,
    }


def upstream_timeout(upstream: Upstream) -> ApiError:
    return ApiError(
        504,
        "upstream_error",
        "upstream_timeout",
        f"the upstream '{upstream.name}' did not answer in time",
    )


def upstream_failed(upstream: Upstream, why: str) -> ApiError:
    return ApiError(
        502, "upstream_error", "upstream_error", f"the upstream '{upstream.name}' failed: {why}"
    )


_CLIENT_ERRORS = {
    400: (400, "invalid_request_error"),
    404: (404, "not_found_error"),
    409: (409, "invalid_request_error"),
    413: (413, "invalid_request_error"),
    422: (400, "invalid_request_error"),
}


def upstream_status_error(
    upstream: Upstream, status: int, raw: bytes, retry_after: str | None = None
) -> ApiError:
    """Client errors the upstream found are the client's to see; the rest is a 502.

    An upstream's 429 keeps its ``Retry-After`` (in seconds) when it gave one.
    """
    message = ""
    upstream_code = None
    param = None
    try:
        err = json.loads(raw).get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            upstream_code = err.get("code")
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError, RecursionError):
        pass
    if status in _CLIENT_ERRORS:
        # in the contract's own pairs of status and type (it has no 422: that is a 400)
        answered, type_ = _CLIENT_ERRORS[status]
        return ApiError(
            answered,
            type_,
            str(upstream_code or "upstream_rejected"),
            message or f"the upstream rejected the request ({status})",
            param=param,
        )
    if status == 429:
        return ApiError(
            429,
            "rate_limit_error",
            "rate_limited",
            message or "the upstream is rate limiting",
            headers={"Retry-After": retry_after if retry_after and retry_after.isdigit() else "1"},
        )
    return ApiError(
        502,
        "upstream_error",
        "upstream_error",
        f"the upstream '{upstream.name}' answered {status}" + (f": {message}" if message else ""),
    )
