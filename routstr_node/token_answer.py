"""Reading a token route's answer: what it cost, and the names the node writes into it.

Shared by the plain and the streaming path. The cost is the answering provider's
price applied to the upstream's ``usage``, or to the node's own count when it sent
none. Every answer names the model as the node sells it (its id, without suffix) and
the provider that answered.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from routstr_node.pricing import Cost, cost_msat
from routstr_node.routing import Candidate
from routstr_node.sessions import SessionTurn
from routstr_node.usage import TokenUsage, estimate_prompt_tokens, estimate_tokens_of_bytes

# a "model" member whose value is a string, in the "unrolled" form (runs of plain bytes
# between escapes: a per-byte alternation is run byte by byte, 4x slower); never matched
# inside a JSON string, where quotes are escaped
_MODEL_MEMBER = re.compile(rb'"model"\s*:\s*"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A request on a token route, as its answer is read."""

    path: str
    body: dict[str, Any]
    model_id: str  # the node's id of the model, without suffix
    session: SessionTurn | None = None  # a chat request in a session (sessions on)

    def own_count(self, output_text: str) -> TokenUsage:
        """The node's own count, for an answer without usage (the prompt read only then)."""
        return self.own_count_of_bytes(len(output_text.encode()))

    def own_count_of_bytes(self, output_bytes: int) -> TokenUsage:
        """The own count of an output of ``output_bytes`` UTF-8 bytes (a stream keeps no
        more of its text than that)."""
        return TokenUsage(
            estimate_prompt_tokens(self.body), estimate_tokens_of_bytes(output_bytes), False
        )

    def usage_fields(self, usage: TokenUsage) -> dict[str, int]:
        """The counts of ``usage`` under the names of the endpoint's own usage object."""
        if self.path == "/v1/responses":
            names = ("input_tokens", "output_tokens")
        else:
            names = ("prompt_tokens", "completion_tokens")
        return {
            names[0]: usage.input_tokens,
            names[1]: usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }

    def renamer(self) -> ModelRenamer:
        return _renamer(self.model_id)


def cost_at(candidate: Candidate, usage: TokenUsage) -> Cost:
    """What ``usage`` costs at the provider that answered."""
    return cost_msat(candidate.price, usage.input_tokens, usage.output_tokens)


def cost_json(cost: Cost) -> dict[str, int]:
    return {
        "total_msats": cost.total_msat,
        "input_msats": cost.input_msat,
        "output_msats": cost.output_msat + cost.request_msat,
    }


@functools.lru_cache(maxsize=1024)
def _renamer(model_id: str) -> ModelRenamer:
    return ModelRenamer(model_id)


class ModelRenamer:
    """Writes the node's model id over every "model" member of a JSON text: a stream's
    events are renamed without being parsed."""

    __slots__ = ("_member", "_replacement")

    def __init__(self, model_id: str) -> None:
        self._member = b'"model":' + json.dumps(model_id).encode()
        self._replacement = self._member.replace(b"\\", b"\\\\")  # literal, for re.sub

    def __call__(self, data: bytes) -> bytes:
        found = data.count(b'"model"')
        if not found or (found == 1 and self._member in data):
            return data  # no model, or only the node's own already
        return _MODEL_MEMBER.sub(self._replacement, data)
