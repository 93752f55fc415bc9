"""What choosing among providers and failing over cost: in-process and through the node.

In process: ``routstr_node.routing.choose`` for the bench's own models, timed alone
(its cost is the whole of what a routed request adds before its first attempt).
Through the node, at concurrency 1, interleaved: the one-provider model, the model
with three providers, the same with a `provider` object, a failover (the first
provider answers 500), and that failing answer straight from the mock; the failover's
figure is then read against the success and the failed attempt it is made of.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median
from typing import Any

import aiohttp

from proxybench import FAIL_MODEL, FAILOVER_MODEL, MODEL, ROUTED_MODEL, UPSTREAM_KEY
from proxybench.load import LoadError, percentile

_PROVIDER_OBJECT = {"sort": "price", "ignore": ["mock3"]}


def _chat(model: str, **extra: Any) -> bytes:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
        **extra,
    }
    return json.dumps(payload).encode()


def time_choice(config: Path, rounds: int = 20_000) -> list[tuple[str, float]]:
    """Microseconds per call of the provider choice, for each kind of request."""
    from routstr_node.config import load_settings
    from routstr_node.pricing import ModelPrice, max_cost_msat
    from routstr_node.routing import (
        NO_PREFERENCES,
        ProviderBoard,
        Variant,
        choose,
        find_model,
        parse_preferences,
    )

    settings = load_settings(config, {})
    board = ProviderBoard()
    names = [u.name for u in settings.upstreams]
    body = json.loads(_chat(ROUTED_MODEL, provider=_PROVIDER_OBJECT))
    for name in ("mock", "mock2", "mock3"):
        board.generated(name, ROUTED_MODEL, 100, 0.1)

    prices = {  # the node keeps them per model and rate: computed once
        m.id: tuple(ModelPrice.from_config(m, settings.pricing, None, o) for o in m.offers)
        for m in settings.models
    }

    def case(requested: str, provider: Any) -> Callable[[], object]:
        def run() -> object:
            model, variant = find_model(settings, requested)
            preferences = NO_PREFERENCES if provider is None else parse_preferences(provider, names)
            return choose(
                model,
                prices[model.id],
                lambda p: max_cost_msat(p, 100, 16),
                board,
                variant=variant,
                preferences=preferences,
                body=body,
                running=names,
            )

        return run

    cases = [
        ("one provider", case(MODEL, None)),
        ("three providers, default order", case(ROUTED_MODEL, None)),
        ("three providers, :nitro", case(f"{ROUTED_MODEL}:{Variant.NITRO}", None)),
        ("three providers, provider object", case(ROUTED_MODEL, _PROVIDER_OBJECT)),
    ]
    timed = []
    for label, run in cases:
        for _ in range(1000):
            run()
        started = time.perf_counter()
        for _ in range(rounds):
            run()
        timed.append((label, (time.perf_counter() - started) / rounds * 1e6))
    return timed


@dataclass(frozen=True)
class _Case:
    label: str
    url: str
    key: str
    data: bytes
    status: int


async def _timed(session: aiohttp.ClientSession, case: _Case) -> float:
    headers = {"Authorization": f"Bearer {case.key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    async with session.post(case.url, data=case.data, headers=headers) as resp:
        raw = await resp.read()
        if resp.status != case.status:
            raise LoadError(f"{case.label}: {resp.status} {raw[:300]!r}")
        if case.status == 200 and b'"provider"' not in raw:
            raise LoadError(f"{case.label}: the answer names no provider")
    return time.perf_counter() - started


async def measure_routing(
    node_url: str, upstream_url: str, key: str, n: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per request at concurrency 1, each case in turn."""
    path = "/v1/chat/completions"
    node = node_url + path
    cases = [
        _Case("one provider", node, key, _chat(MODEL), 200),
        _Case("three providers", node, key, _chat(ROUTED_MODEL), 200),
        _Case(
            "three, provider object", node, key, _chat(ROUTED_MODEL, provider=_PROVIDER_OBJECT), 200
        ),
        _Case(
            "failover (500, then ok)",
            node,
            key,
            # named first by the client: tried first although its failures made it `down`
            _chat(FAILOVER_MODEL, provider={"order": ["failing"]}),
            200,
        ),
        _Case(
            "the failing attempt, direct", upstream_url + path, UPSTREAM_KEY, _chat(FAIL_MODEL), 500
        ),
    ]
    samples: dict[str, list[float]] = {c.label: [] for c in cases}
    connector = aiohttp.TCPConnector(limit=len(cases))
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(warmup + n):
            for case in cases:
                seconds = await _timed(session, case)
                if i >= warmup:
                    samples[case.label].append(seconds)
    return samples


def report_routing(choice_us: list[tuple[str, float]], samples: dict[str, list[float]]) -> None:
    print("provider choice in process (find_model, parse_preferences, choose), per request:")
    for label, us in choice_us:
        print(f"  {label:36} {us:6.1f} us")
    one = choice_us[0][1]
    worst = max(us for _, us in choice_us[1:])
    print(f"  three providers add at most {worst - one:.1f} us over one (target <= 50 us)")
    print()
    print("through the node, concurrency 1, non-streaming (ms):")
    print(f"  {'case':32} {'p50':>7} {'mean':>7} {'p99':>7}")
    for label, values in samples.items():
        print(
            f"  {label:32} {median(values) * 1000:7.3f} {mean(values) * 1000:7.3f}"
            f" {percentile(values, 0.99) * 1000:7.3f}"
        )
    p50 = {label: median(values) for label, values in samples.items()}
    single, routed = p50["one provider"], p50["three providers"]
    with_object = p50["three, provider object"]
    failover, failing = p50["failover (500, then ok)"], p50["the failing attempt, direct"]
    print(f"  three providers vs one (p50):                 {(routed - single) * 1e6:+7.0f} us")
    print(
        f"  with a provider object vs one (p50):          {(with_object - single) * 1e6:+7.0f} us"
    )
    extra = failover - with_object - failing
    print(f"  failover beyond success + failed attempt (p50): {extra * 1e6:+7.0f} us")
