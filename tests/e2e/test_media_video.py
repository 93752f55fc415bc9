"""Video: the synchronous route forwarded, OpenAI's asynchronous jobs driven by the node,
disconnects and failures charged nothing; and a media price changed by the admin API.

The OpenAI SDK has no method for /v1/video/generations: raw HTTP, as its users send it.
"""

from __future__ import annotations

import asyncio
import base64
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from support.e2e import (
    Answer,
    SdkFactory,
    assert_balanced,
    assert_error,
    get,
    post,
    reservations,
    until,
    wait_until_settled,
)
from support.ecash import EcashFactory
from support.media import (
    DEFAULT_VIDEO_SECONDS,
    IMAGE,
    JOBS_TIMEOUT_S,
    JOBS_VIDEO_MSAT,
    VIDEO,
    VIDEO_JOBS,
    VIDEO_MSAT,
    change_sat,
    media_toml,
)
from support.node import RunningNode, run_node
from support.routing import Providers

from routstr_node.demo.media_replies import shipped
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "media admin password"


def video_of(answer: Answer) -> bytes:
    (item,) = answer.body["data"]
    assert "url" not in item
    assert item["content_type"] == "video/mp4"
    video = base64.b64decode(item["b64_json"])
    assert video[4:8] == b"ftyp"  # an MP4
    return video


async def generate(node: RunningNode, body: dict[str, Any], token: str) -> Answer:
    return await post(f"{node.url}/v1/video/generations", body, {"X-Cashu": token})


async def test_synchronous_video_is_forwarded_and_charged_by_seconds_and_resolution(
    media_node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    body = {"model": VIDEO, "prompt": "waves at dusk", "duration": 4.5, "size": "1920x1080"}
    answer = await generate(media_node, body, token)
    assert answer.status == 200, answer.raw
    assert video_of(answer) == shipped("clip.mp4")
    expected = 5 * VIDEO_MSAT["1080p"]  # 4.5 s is 5 started seconds
    assert answer.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert answer.body["cost"] == 60
    assert (answer.body["model"], answer.body["provider"]) == (VIDEO, "fake")
    usage = answer.body["usage"]
    assert (usage["units"], usage["unitType"], usage["resolution"]) == (5, "second", "1080p")
    assert usage["cost"]["total_msats"] == expected
    forwarded = upstream.requests[-1].json
    assert (forwarded["model"], forwarded["duration"], forwarded["size"]) == (
        VIDEO,
        4.5,
        "1920x1080",
    )
    assert await ecash.redeem(answer.headers["X-Cashu"]) == change_sat(100, expected)


async def test_the_default_duration_is_sent_and_a_keyed_url_comes_back_as_b64(
    media_node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    body = {"model": VIDEO, "prompt": "rain", "size": "720p", "response_format": "url"}
    answer = await generate(media_node, body, token)
    assert answer.status == 200, answer.raw
    video_of(answer)
    posted, fetched = upstream.requests[-2:]
    assert posted.json["duration"] == DEFAULT_VIDEO_SECONDS  # what was reserved for
    assert fetched.method == "GET" and fetched.path == "/v1/media/keyed/clip.mp4"
    assert fetched.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert int(answer.headers["X-Routstr-Cost-Msats"]) == 4 * VIDEO_MSAT["720p"]


async def test_video_errors_cost_nothing(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(200, mint_url=mint.url)
    for body, status, code in (
        ({"model": VIDEO, "prompt": "x", "size": "4K"}, 400, "unsupported_size"),
        ({"model": VIDEO, "prompt": "x", "size": "wide"}, 400, "unsupported_size"),
        ({"model": VIDEO}, 400, "prompt_required"),
        ({"model": VIDEO, "prompt": "x", "duration": -2}, 400, "invalid_duration"),
        ({"model": IMAGE, "prompt": "x"}, 400, "model_wrong_category"),
    ):
        answer = await generate(media_node, body, token)
        assert_error(answer, status, code)
        if code == "unsupported_size":
            assert answer.body["error"]["param"] == "size"
    assert not await ecash.is_spent(token)
    unpaid = await post(
        f"{media_node.url}/v1/video/generations", {"model": VIDEO, "prompt": "x", "duration": 10}
    )
    assert_error(unpaid, 402, "payment_required")
    most = 10 * VIDEO_MSAT["1080p"]  # no size: the dearest resolution
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(most / 1000)


@pytest.mark.parametrize("knob", ["fail_status", "cut_answer"])
async def test_a_failed_synchronous_video_charges_nothing(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    knob: str,
) -> None:
    setattr(upstream.behaviour, knob, 500 if knob == "fail_status" else True)
    token = await ecash.token(80, mint_url=mint.url)
    answer = await generate(media_node, {"model": VIDEO, "prompt": "x"}, token)
    assert_error(answer, 502, "upstream_error")
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 80


async def test_openai_video_jobs_are_driven_to_completion(
    media_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    jobs = providers.a
    jobs.behaviour.video_sync = False
    token = await ecash.token(100, mint_url=mint.url)
    answer = await generate(
        media_node, {"model": VIDEO_JOBS, "prompt": "a fox", "size": "720p"}, token
    )
    assert answer.status == 200, answer.raw
    assert video_of(answer) == shipped("clip.mp4")
    expected = DEFAULT_VIDEO_SECONDS * JOBS_VIDEO_MSAT["720p"]
    assert answer.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert answer.body["provider"] == "jobs" and answer.body["model"] == VIDEO_JOBS
    usage = answer.body["usage"]
    assert (usage["units"], usage["resolution"]) == (DEFAULT_VIDEO_SECONDS, "720p")
    paths = [(r.method, r.path) for r in jobs.requests]
    created = next(r for r in jobs.requests if r.path == "/v1/videos")
    assert created.form == {
        "model": "sora-2",
        "prompt": "a fox",
        "seconds": "4",
        "size": "1280x720",
    }
    (job_id,) = jobs.behaviour.video_jobs
    assert ("GET", f"/v1/videos/{job_id}") in paths
    assert paths[-1] == ("GET", f"/v1/videos/{job_id}/content")
    assert await ecash.redeem(answer.headers["X-Cashu"]) == change_sat(100, expected)
    await assert_balanced(media_node)


async def test_a_failed_or_endless_video_job_charges_nothing(
    media_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    jobs = providers.a
    jobs.behaviour.video_sync = False
    jobs.behaviour.video_job_fails = True
    token = await ecash.token(60, mint_url=mint.url)
    failed = await generate(media_node, {"model": VIDEO_JOBS, "prompt": "x"}, token)
    assert_error(failed, 502, "upstream_error")
    assert "could not be made" in failed.body["error"]["message"]
    assert await ecash.redeem(failed.headers["X-Cashu"]) == 60
    jobs.behaviour.video_job_fails = False
    jobs.behaviour.video_job_s = JOBS_TIMEOUT_S * 5
    token = await ecash.token(60, mint_url=mint.url)
    endless = await generate(media_node, {"model": VIDEO_JOBS, "prompt": "x"}, token)
    assert_error(endless, 504, "upstream_timeout")
    assert await ecash.redeem(endless.headers["X-Cashu"]) == 60


async def _leave_early(node: RunningNode, body: dict[str, Any], token: str) -> None:
    """A client that gives up on its video after half a second."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await session.post(
                    f"{node.url}/v1/video/generations", json=body, headers={"X-Cashu": token}
                )


@pytest.mark.parametrize("route", ["synchronous", "jobs"])
async def test_a_client_that_leaves_before_its_video_pays_nothing(
    media_node: RunningNode,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    route: str,
) -> None:
    if route == "synchronous":
        upstream.behaviour.delay_s = 3
        model = VIDEO
    else:
        providers.a.behaviour.video_sync = False
        providers.a.behaviour.video_job_s = 1.5
        model = VIDEO_JOBS
    token = await ecash.token(90, mint_url=mint.url)
    await _leave_early(media_node, {"model": model, "prompt": "x"}, token)

    async def settled() -> tuple[int, str, int | None] | None:
        last = reservations(media_node)[-1]
        return last if last[1] != "open" else None

    assert (await until(settled))[2] in (0, None)  # nothing charged
    await wait_until_settled(media_node)
    metrics = (await get(f"{media_node.url}/metrics")).raw.decode()
    assert 'route="/v1/video/generations",status="499"' in metrics
    if route == "jobs":  # the node stopped polling: the video is never downloaded
        await asyncio.sleep(1.5)
        assert not [r for r in providers.a.requests if r.path.endswith("/content")]
    refund = await post(f"{media_node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert refund.status == 200, refund.raw
    assert refund.body["amount"] == 90
    assert await ecash.redeem(refund.body["cashu_token"]) == 90
    await assert_balanced(media_node)


async def test_media_prices_change_through_the_admin_api(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
    openai_sdk: SdkFactory,
) -> None:
    extra = media_toml(providers.a) + f'[admin]\npassword = "{PASSWORD}"\n'
    async with (
        run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin,
    ):
        async with admin.post(f"{node.url}/admin/login", json={"password": PASSWORD}) as resp:
            assert resp.status == 200
        async with admin.get(f"{node.url}/admin/api/settings") as resp:
            models = (await resp.json())["models"]
        for model in models:
            if model["id"] == IMAGE:
                model["image_sat"] = None
                model["image_usd"] = 0.05  # $0.05 at $100k/BTC: 50 sat
                model["image_sat_by_size"] = None
        async with admin.patch(f"{node.url}/admin/api/settings", json={"models": models}) as resp:
            assert resp.status == 200, await resp.text()
        token = await ecash.token(100, mint_url=mint.url)
        client = openai_sdk(node, x_cashu=token)
        raw = await client.images.with_raw_response.generate(
            model=IMAGE, prompt="x", size="1024x1024"
        )
        assert raw.headers["X-Routstr-Cost-Msats"] == "50000"
        assert await ecash.redeem(raw.headers["X-Cashu"]) == 50
