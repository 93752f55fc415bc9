"""Images and speech, paid every way, end to end through the official OpenAI SDK.

A real node in front of the fake upstream, paid with ecash minted by nutshell's wallet
at the session's mint; change is redeemed by nutshell; the audit balances after all.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import openai
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from support.accounts import balance_of, funded_auth
from support.e2e import SdkFactory, assert_balanced, assert_error, get, post, wait_until_settled
from support.ecash import EcashFactory
from support.media import (
    CHAR_MSAT,
    IMAGE,
    IMAGE_MSAT,
    IMAGE_PLAIN_MSAT,
    IMAGE_ROUTED,
    IMAGE_SIZED,
    SPEECH,
    change_sat,
)
from support.node import MODEL, RunningNode
from support.routing import Providers

from routstr_node.demo.media_replies import shipped
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXT = "Ecash for every spoken word."


def body_cost(obj: Any) -> tuple[float | int, dict[str, int]]:
    dumped = obj.model_dump()
    return dumped["cost"], dumped["usage"]["cost"]


async def test_x_cashu_images_charge_images_returned_and_return_change(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    raw = await client.images.with_raw_response.generate(
        model=IMAGE, prompt="a lighthouse", n=2, size="1024x1024", quality="hd"
    )
    result = raw.parse()
    expected = 2 * IMAGE_MSAT["1024x1024/hd"]
    assert result.data is not None and len(result.data) == 2
    assert all(
        base64.b64decode(image.b64_json or "").startswith(PNG_MAGIC) for image in result.data
    )
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert raw.headers["X-Routstr-Provider"] == "fake"
    extra = result.model_dump()
    assert (extra["model"], extra["provider"]) == (IMAGE, "fake")
    assert body_cost(result) == (
        160,
        {"total_msats": expected, "input_msats": 0, "output_msats": expected},
    )
    assert extra["usage"]["images"] == 2
    forwarded = upstream.requests[-1].json
    assert forwarded["model"] == "fake-image" and forwarded["n"] == 2
    assert await ecash.is_spent(token)
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(500, expected)
    await assert_balanced(media_node)


async def test_an_image_size_without_a_price_of_its_own_takes_image_sat_and_urls_pass(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint, openai_sdk: SdkFactory
) -> None:
    auth = await funded_auth(media_node.url, ecash, mint.url, 200)
    key = auth["Authorization"].removeprefix("Bearer ")
    client = openai_sdk(media_node, api_key=key)
    raw = await client.images.with_raw_response.generate(
        model=IMAGE, prompt="a boat", size="512x512", response_format="url"
    )
    result = raw.parse()
    assert result.data is not None and result.data[0].url
    fetched = await get(result.data[0].url)  # a public URL, as OpenAI's are
    assert fetched.status == 200 and fetched.raw.startswith(PNG_MAGIC)
    assert int(raw.headers["X-Routstr-Cost-Msats"]) == IMAGE_PLAIN_MSAT
    assert "X-Cashu" not in raw.headers
    balance = await balance_of(media_node.url, auth)
    assert balance["balance_msat"] == 200_000 - IMAGE_PLAIN_MSAT


async def test_speech_is_audio_bytes_with_the_money_in_headers(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    raw = await client.audio.speech.with_raw_response.create(
        model=SPEECH, voice="alloy", input=TEXT
    )
    audio = raw.content
    assert audio == shipped("tone.mp3")
    assert raw.headers["Content-Type"] == "audio/mpeg"
    expected = len(TEXT) * CHAR_MSAT
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert raw.headers["X-Routstr-Provider"] == "fake"
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(100, expected)
    assert upstream.requests[-1].json["input"] == TEXT


async def test_speech_as_wav_with_a_token_as_the_key(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint, openai_sdk: SdkFactory
) -> None:
    token = await ecash.token(50, mint_url=mint.url)
    client = openai_sdk(media_node, api_key=token)
    spent = 0
    for text in ("one", "two words"):
        raw = await client.audio.speech.with_raw_response.create(
            model=SPEECH, voice="alloy", input=text, response_format="wav"
        )
        assert raw.content.startswith(b"RIFF")
        assert int(raw.headers["X-Routstr-Cost-Msats"]) == len(text) * CHAR_MSAT
        spent += len(text) * CHAR_MSAT
    info = await get(f"{media_node.url}/v1/balance/info", {"Authorization": f"Bearer {token}"})
    assert info.body["balance"] == 50_000 - spent


async def test_without_payment_a_402_asks_for_the_most_the_request_can_cost(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    body = {"model": IMAGE, "prompt": "x", "n": 3, "size": "1024x1024"}
    unpaid = await post(f"{media_node.url}/v1/images/generations", body)
    assert_error(unpaid, 402, "payment_required", "insufficient_quota")
    asked = PaymentRequest.deserialize(unpaid.headers["X-Cashu"])
    assert asked.a == math.ceil(3 * IMAGE_MSAT["1024x1024"] / 1000) == 120
    small = await ecash.token(100, mint_url=mint.url)
    short = await post(f"{media_node.url}/v1/images/generations", body, {"X-Cashu": small})
    assert_error(short, 402, "payment_required")
    assert not await ecash.is_spent(small)  # refused before it was redeemed
    speech = {"model": SPEECH, "input": "a" * 4000, "voice": "alloy"}
    unpaid = await post(f"{media_node.url}/v1/audio/speech", speech)
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(
        4000 * CHAR_MSAT / 1000
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/images/generations", {"model": MODEL, "prompt": "x"}, 400, "model_wrong_category"),
        ("/v1/images/generations", {"model": SPEECH, "prompt": "x"}, 400, "model_wrong_category"),
        (
            "/v1/audio/speech",
            {"model": IMAGE, "input": "x", "voice": "a"},
            400,
            "model_wrong_category",
        ),
        ("/v1/images/generations", {"model": IMAGE}, 400, "prompt_required"),
        ("/v1/images/generations", {"prompt": "x"}, 400, "model_required"),
        ("/v1/images/generations", {"model": "nope", "prompt": "x"}, 404, "model_not_available"),
        ("/v1/audio/speech", {"model": SPEECH, "voice": "alloy"}, 400, "input_required"),
        ("/v1/images/generations", {"model": IMAGE, "prompt": "x", "n": 20}, 400, "invalid_n"),
        (
            "/v1/chat/completions",
            {"model": IMAGE, "messages": [{"role": "user", "content": "x"}]},
            400,
            "model_wrong_category",
        ),
    ],
)
async def test_bad_requests_are_refused_and_the_token_stays_unspent(
    media_node: RunningNode,
    ecash: EcashFactory,
    mint: LocalMint,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    token = await ecash.token(200, mint_url=mint.url)
    answer = await post(f"{media_node.url}{path}", body, {"X-Cashu": token})
    assert_error(answer, status, code)
    assert not await ecash.is_spent(token)


async def test_an_unpriced_size_is_unsupported_size_and_leaves_out_providers(
    media_node: RunningNode,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    with pytest.raises(openai.BadRequestError) as raised:
        await client.images.generate(model=IMAGE_SIZED, prompt="x", size="512x512")
    assert raised.value.code == "unsupported_size"
    assert raised.value.body["param"] == "size"  # type: ignore[index]
    assert "1024x1024" in raised.value.message
    assert not await ecash.is_spent(token)
    # an unpriced quality of a priced size is the size's price
    raw = await client.images.with_raw_response.generate(
        model=IMAGE, prompt="x", size="256x256", quality="hd"
    )
    assert int(raw.headers["X-Routstr-Cost-Msats"]) == IMAGE_MSAT["256x256"]
    # a provider that does not sell the size is not a candidate: no failover to it
    upstream.behaviour.fail_status = 500
    other = await ecash.token(100, mint_url=mint.url)
    answer = await post(
        f"{media_node.url}/v1/images/generations",
        {"model": IMAGE_ROUTED, "prompt": "x", "size": "512x512"},
        {"X-Cashu": other},
    )
    assert_error(answer, 502, "upstream_error")
    assert not providers.a.requests
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 100


async def test_an_upstream_failure_charges_nothing_and_gives_all_back(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    for knob, value in (("fail_status", 500), ("cut_answer", True)):
        upstream.behaviour.reset()
        setattr(upstream.behaviour, knob, value)
        for path, body in (
            ("/v1/images/generations", {"model": IMAGE, "prompt": "x"}),
            ("/v1/audio/speech", {"model": SPEECH, "input": "hello", "voice": "alloy"}),
        ):
            token = await ecash.token(150, mint_url=mint.url)
            answer = await post(f"{media_node.url}{path}", body, {"X-Cashu": token})
            assert_error(answer, 502, "upstream_error", "upstream_error")
            assert "X-Routstr-Cost-Msats" not in answer.headers
            assert await ecash.redeem(answer.headers["X-Cashu"]) == 150, (knob, path)
    # through the SDK, the error carries the whole token back too
    upstream.behaviour.reset()
    upstream.behaviour.fail_status = 503
    token = await ecash.token(120, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    with pytest.raises(openai.InternalServerError) as raised:
        await client.audio.speech.create(model=SPEECH, voice="alloy", input="hi")
    assert await ecash.redeem(raised.value.response.headers["X-Cashu"]) == 120
    await wait_until_settled(media_node)
    await assert_balanced(media_node)


async def test_a_failing_provider_is_failed_over_and_the_answering_one_charged(
    media_node: RunningNode,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    upstream.behaviour.fail_status = 500
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    # fake first, even if earlier tests' failures have it listed down (tried last)
    raw = await client.images.with_raw_response.generate(
        model=IMAGE_ROUTED, prompt="x", extra_body={"provider": {"order": ["fake", "jobs"]}}
    )
    assert raw.headers["X-Routstr-Provider"] == "jobs"
    assert raw.parse().model_dump()["provider"] == "jobs"
    assert int(raw.headers["X-Routstr-Cost-Msats"]) == 20_000  # jobs' price
    assert len(upstream.requests) == 1 and len(providers.a.requests) == 1
    assert await ecash.redeem(raw.headers["X-Cashu"]) == 80


async def test_media_models_are_listed_with_their_prices_and_routes(
    media_node: RunningNode, openai_sdk: SdkFactory
) -> None:
    listed = {m.id: m.model_dump() for m in (await openai_sdk(media_node).models.list()).data}
    image = listed[IMAGE]
    assert image["category"] == "image"
    assert image["media_pricing"] == {
        "image": 30,
        "image_by_size": {"1024x1024": 40, "1024x1024/hd": 80, "256x256": 10},
        "currency": "sat",
    }
    assert listed[SPEECH]["media_pricing"] == {"per_1m_chars": 15000, "currency": "sat"}
    routed = listed[IMAGE_ROUTED]["providers"]
    # by name: a provider that failed in an earlier test may be listed last (down)
    assert {p["name"]: p["media_pricing"] for p in routed} == {
        "fake": {"image": 30, "currency": "sat"},
        "jobs": {"image_by_size": {"1024x1024": 20}, "currency": "sat"},
    }
    jobs = await get(f"{media_node.url}/v1/providers/jobs")
    assert "/v1/images/generations" in jobs.body["endpoints"]
    assert "/v1/chat/completions" not in jobs.body["endpoints"]
