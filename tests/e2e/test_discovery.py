"""What the node tells about itself (CONTRACT §6): models and prices, node info,
providers, health and Prometheus metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.e2e import SdkFactory, assert_error, chat_body, get, post
from support.ecash import EcashFactory
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PROXIED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
MODEL_KEYS = {"id", "object", "created", "owned_by", "context_length", "pricing", "sats_pricing"}

# one sample line of the Prometheus text format: name{labels} value
_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,|(?=\})))*\})?'
    r" (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$"
)
_COMMENT = re.compile(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$")


async def test_models_list_prices_per_contract(node: RunningNode) -> None:
    answer = await get(f"{node.url}/v1/models")
    assert answer.status == 200
    assert answer.body["object"] == "list"
    models = {m["id"]: m for m in answer.body["data"]}
    assert set(models) == {"test-model", "usd-model"}
    for entry in models.values():
        assert set(entry) >= MODEL_KEYS, entry
        assert entry["object"] == "model"
        assert isinstance(entry["created"], int)
        assert isinstance(entry["owned_by"], str)

    # test-model: 1 sat per input token, 2 per output token, context 4000, max output 50
    test_model = models["test-model"]
    assert test_model["context_length"] == 4000
    assert test_model["pricing"] == {
        "prompt": 1000,
        "completion": 2000,
        "request": 0,
        "unit": "1k tokens",
        "currency": "sat",
    }
    assert test_model["sats_pricing"] == {
        "prompt": 1,
        "completion": 2,
        "request": 0,
        "max_cost": 4000 * 1 + 50 * 2,  # a full context of input plus the longest output
    }

    # usd-model: $0.15 / $0.60 per 1M tokens at 100000 USD/BTC = 0.15 / 0.6 msat per token
    usd = models["usd-model"]
    assert usd["context_length"] == 128000
    assert usd["pricing"]["prompt"] == pytest.approx(0.15)
    assert usd["pricing"]["completion"] == pytest.approx(0.6)
    assert (usd["pricing"]["unit"], usd["pricing"]["currency"]) == ("1k tokens", "sat")
    assert usd["sats_pricing"]["prompt"] == pytest.approx(0.00015)
    assert usd["sats_pricing"]["completion"] == pytest.approx(0.0006)
    assert usd["sats_pricing"]["max_cost"] == 20  # ceil((128000 × 0.15 + 1000 × 0.6) msat)


async def test_models_through_the_sdk(node: RunningNode, openai_sdk: SdkFactory) -> None:
    page = await openai_sdk(node).models.list()
    listed = {m.id: m for m in page.data}
    assert set(listed) == {"test-model", "usd-model"}
    extra = listed["test-model"].model_extra or {}
    assert extra["sats_pricing"]["completion"] == 2


async def test_one_model_by_id_as_the_sdk_retrieves_it(
    node: RunningNode, openai_sdk: SdkFactory
) -> None:
    listed = {m["id"]: m for m in (await get(f"{node.url}/v1/models")).body["data"]}
    one = await get(f"{node.url}/v1/models/test-model")
    assert one.status == 200
    assert one.body == listed["test-model"]
    retrieved = await openai_sdk(node).models.retrieve("usd-model")
    assert (retrieved.id, retrieved.object) == ("usd-model", "model")
    missing = await get(f"{node.url}/v1/models/no-such-model")
    assert_error(missing, 404, "model_not_available", "not_found_error")


async def test_a_model_id_with_a_slash_is_found_too(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    extra = """
[[models]]
id = "openai/gpt-4o-mini"
upstream = "fake"
input_sat_per_1m = 1000
output_sat_per_1m = 2000
context_length = 4000
max_output_tokens = 50
"""
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        one = await get(f"{node.url}/v1/models/openai/gpt-4o-mini")
        assert one.status == 200, one.raw
        assert one.body["id"] == "openai/gpt-4o-mini"


async def test_info(node: RunningNode, mint: LocalMint) -> None:
    answer = await get(f"{node.url}/v1/info")
    assert answer.status == 200
    info = answer.body
    assert set(info) >= {"name", "description", "version", "npub", "mints", "http_url", "models"}
    assert info["name"] == "Test Node"
    assert isinstance(info["description"], str)
    assert isinstance(info["version"], str) and info["version"]
    assert info["npub"].startswith("npub1")
    assert info["mints"] == [mint.url.rstrip("/")]
    assert info["http_url"].startswith("http")
    assert info["models"] == ["test-model", "usd-model"]
    again = await get(f"{node.url}/v1/info")
    assert again.body["npub"] == info["npub"]


async def test_providers(node: RunningNode) -> None:
    answer = await get(f"{node.url}/v1/providers")
    assert answer.status == 200
    assert answer.body == {
        "providers": [
            {
                "name": "fake",
                "models": ["test-model", "usd-model"],
                "endpoints": answer.body["providers"][0]["endpoints"],
                "status": "active",
            }
        ],
        "nodes": [],  # no Nostr relays configured: no other nodes known
    }
    assert sorted(answer.body["providers"][0]["endpoints"]) == sorted(PROXIED)

    one = await get(f"{node.url}/v1/providers/fake")
    assert one.status == 200
    provider = one.body
    assert set(provider) >= {
        "name",
        "display_name",
        "description",
        "models",
        "endpoints",
        "features",
        "status",
    }
    assert provider["name"] == "fake"
    assert isinstance(provider["display_name"], str)
    assert isinstance(provider["description"], str)
    assert provider["status"] == "active"
    assert sorted(provider["endpoints"]) == sorted(PROXIED)
    assert "streaming" in provider["features"]
    assert all(isinstance(f, str) for f in provider["features"])
    models = {m["id"]: m for m in provider["models"]}
    assert set(models) == {"test-model", "usd-model"}
    assert set(models["test-model"]) >= {"id", "name", "context_window", "pricing"}
    assert models["test-model"]["context_window"] == 4000
    assert models["test-model"]["pricing"]["prompt"] == 1000
    assert models["usd-model"]["context_window"] == 128000

    missing = await get(f"{node.url}/v1/providers/nope")
    assert_error(missing, 404, "not_found", "not_found_error")


async def test_a_failing_provider_is_down_until_a_call_works(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    key = {"Authorization": f"Bearer {await ecash.token(500, mint_url=mint.url)}"}
    url = f"{node.url}/v1/chat/completions"

    async def status() -> str:
        listed = (await get(f"{node.url}/v1/providers")).body["providers"][0]["status"]
        one = (await get(f"{node.url}/v1/providers/fake")).body["status"]
        assert listed == one
        return str(one)

    upstream.behaviour.fail_status = 503
    seen = []
    for stream in (False, True, False):  # three failures in a row, plain or streamed
        assert (await post(url, chat_body("hi", stream=stream), key)).status == 502
        seen.append(await status())
    assert seen == ["active", "active", "down"]
    upstream.behaviour.fail_status = 400  # the request's fault, not the provider's
    assert (await post(url, chat_body("hi"), key)).status == 400
    assert await status() == "active"


async def test_health(node: RunningNode) -> None:
    answer = await get(f"{node.url}/health")
    assert answer.status == 200
    assert answer.body == {"status": "ok"}


def _samples(text: str) -> dict[str, float]:
    """Every sample line, keyed by name plus labels; checks the text format on the way."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            assert _COMMENT.match(line), line
            continue
        match = _SAMPLE.match(line)
        assert match, line
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
    return samples


async def test_metrics_are_prometheus_text(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    paid = await post(f"{node.url}/v1/chat/completions", chat_body("hi"), {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    cost = int(paid.headers["X-Routstr-Cost-Msats"])

    answer = await get(f"{node.url}/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = answer.raw.decode()
    for name, kind in [
        ("routstr_requests_total", "counter"),
        ("routstr_request_duration_seconds", "histogram"),
        ("routstr_charged_msat_total", "counter"),
        ("routstr_open_streams", "gauge"),
        ("routstr_upstream_duration_seconds", "histogram"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text, name
    samples = _samples(text)
    assert samples["routstr_charged_msat_total"] == cost
    assert samples["routstr_open_streams"] == 0
    assert samples["routstr_request_duration_seconds_count"] >= 1
    assert any(
        k.startswith("routstr_upstream_duration_seconds_count") and v >= 1
        for k, v in samples.items()
    )
    requests = {k: v for k, v in samples.items() if k.startswith("routstr_requests_total{")}
    assert any('status="200"' in k and "chat/completions" in k for k in requests), requests
