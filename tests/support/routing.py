"""Three fake providers behind one node: the models and prices of the routing tests.

`routed` is sold through a (dearest), b (cheapest) and c (in between), in that order.
`chain` tries a provider nobody listens on first ("gone": connection refused), then
a, b and c. Each fake provider is its own server, so a test turns each one's knobs
(500, 429, a hang, a cut stream, slow tokens) and reads what each one received.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from routstr_node.demo.upstream import RunningUpstream, count_tokens

ROUTED = "routed"
CHAIN = "chain"
PROVIDER_TIMEOUT_S = 2  # a hanging provider is given up after this
CONTEXT_LENGTH = 4000
MAX_OUTPUT_TOKENS = 50

# msat per (input, output) token at each provider
PRICES = {"gone": (4, 8), "a": (3, 6), "b": (1, 2), "c": (2, 4)}


@dataclass(frozen=True)
class Providers:
    a: RunningUpstream
    b: RunningUpstream
    c: RunningUpstream

    def by_name(self, name: str) -> RunningUpstream:
        found: RunningUpstream = getattr(self, name)
        return found

    def reset(self) -> None:
        for upstream in (self.a, self.b, self.c):
            upstream.behaviour.reset()

    def called(self) -> list[str]:
        """The providers that received a request, in name order."""
        return [n for n in "abc" if self.by_name(n).requests]


def refused_url() -> str:
    """A loopback address where nothing listens: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def cost_at(provider: str, input_tokens: int, output_tokens: int) -> int:
    """What a request costs at ``provider``, in msat (prices are whole msat per token)."""
    per_in, per_out = PRICES[provider]
    return input_tokens * per_in + output_tokens * per_out


def reply_cost(provider: str, prompt: str) -> int:
    """The cost of the fake's echo of a one-message chat at ``provider``."""
    return cost_at(provider, count_tokens(prompt), count_tokens(f"Echo: {prompt}"))


def most_at(provider: str, body_bytes: int, max_output: int = MAX_OUTPUT_TOKENS) -> int:
    """What the node reserves at ``provider`` for a chat body of ``body_bytes``."""
    return cost_at(provider, min(body_bytes, CONTEXT_LENGTH), max_output)


def _sat_prices(provider: str) -> str:
    per_in, per_out = PRICES[provider]
    return f"input_sat_per_1m = {per_in * 1000}\noutput_sat_per_1m = {per_out * 1000}\n"


def routing_toml(providers: Providers, gone_url: str) -> str:
    upstreams = "".join(
        f"""
[[upstreams]]
name = "{name}"
base_url = "{url}"
api_key = "sk-{name}"
timeout_s = {PROVIDER_TIMEOUT_S}
"""
        for name, url in (
            ("a", providers.a.url),
            ("b", providers.b.url),
            ("c", providers.c.url),
            ("gone", gone_url),
        )
    )
    head = f"""
context_length = {CONTEXT_LENGTH}
max_output_tokens = {MAX_OUTPUT_TOKENS}
"""
    return f"""{upstreams}
[[models]]
id = "{ROUTED}"
display_name = "Routed Model"
capabilities = ["chat", "tools"]
{head}
[[models.providers]]
upstream = "a"
upstream_model = "a-model"
{_sat_prices("a")}supported_parameters = ["temperature", "max_tokens"]

[[models.providers]]
upstream = "b"
upstream_model = "b-model"
{_sat_prices("b")}data_collection = "deny"
zdr = true
online = true

[[models.providers]]
upstream = "c"
{_sat_prices("c")}thinking = true
thinking_params = {{reasoning_effort = "high", temperature = 0.2}}

[[models]]
id = "{CHAIN}"
{head}
[[models.providers]]
upstream = "gone"
{_sat_prices("gone")}
[[models.providers]]
upstream = "a"
{_sat_prices("a")}
[[models.providers]]
upstream = "b"
{_sat_prices("b")}
[[models.providers]]
upstream = "c"
{_sat_prices("c")}"""
