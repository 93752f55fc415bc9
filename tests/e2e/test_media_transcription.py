"""Transcriptions and translations: uploads streamed through, started seconds charged.

The reservation is the file's duration read by mutagen (a WAV of an exact length, the
shipped MP3), else the model's max_audio_seconds; the charge the upstream's reported
seconds, else the measured duration, never above the reservation.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import aiohttp
import openai
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from multidict import CIMultiDict
from support.accounts import balance_of, funded_auth
from support.e2e import (
    Answer,
    SdkFactory,
    assert_balanced,
    assert_error,
    post,
    reservations,
)
from support.ecash import EcashFactory
from support.media import (
    AUDIO_MSAT_PER_SECOND,
    IMAGE,
    MAX_AUDIO_SECONDS,
    WHISPER,
    WHISPER_ROUTED,
    audio_cost,
    change_sat,
    media_toml,
    wav_bytes,
)
from support.node import RunningNode, run_node
from support.routing import Providers

from routstr_node.demo.media_replies import shipped
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

WAV_SECONDS = Fraction(9, 2)  # 4.5 s: 5 started seconds


async def upload(
    url: str,
    fields: dict[str, str],
    file: tuple[str, bytes, str] | None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """A multipart POST as any HTTP client sends it."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    if file is not None:
        form.add_field("file", file[1], filename=file[0], content_type=file[2])
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=form, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        return Answer(resp.status, CIMultiDict(resp.headers), body, raw)


async def test_x_cashu_transcription_charges_the_reported_seconds(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    audio = wav_bytes(WAV_SECONDS)
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    raw = await client.audio.transcriptions.with_raw_response.create(
        model=WHISPER, file=("speech.wav", audio, "audio/wav"), language="en"
    )
    result = raw.parse()
    expected = audio_cost(WAV_SECONDS)  # 5 s at 100 msat
    assert expected == 500
    assert result.text.startswith("4.50 seconds of audio")
    extra = result.model_dump()
    assert (extra["model"], extra["provider"], extra["cost"]) == (WHISPER, "fake", 0.5)
    assert extra["usage"]["seconds"] == 5
    assert extra["usage"]["cost"]["total_msats"] == expected
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    received = upstream.requests[-1]
    assert received.form is not None
    assert (received.form["model"], received.form["language"]) == ("whisper-1", "en")
    assert (received.file_name, received.file_size) == ("speech.wav", len(audio))
    assert reservations(media_node)[-1] == (expected, "charged", expected)
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(100, expected)
    await assert_balanced(media_node)


async def test_without_usage_the_measured_duration_is_charged(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    auth = await funded_auth(media_node.url, ecash, mint.url, 100)
    client = openai_sdk(media_node, api_key=auth["Authorization"].removeprefix("Bearer "))
    # text: no usage at all; the shipped MP3 plays 1.08 s: 2 started seconds
    text = await client.audio.transcriptions.create(
        model=WHISPER, file=("tone.mp3", shipped("tone.mp3"), "audio/mpeg"), response_format="text"
    )
    assert isinstance(text, str) and "transcribed" in text
    balance = await balance_of(media_node.url, auth)
    assert balance["balance_msat"] == 100_000 - 2 * AUDIO_MSAT_PER_SECOND
    # a translation without usage: verbose_json's duration is what the upstream heard
    upstream.behaviour.omit_usage = True
    raw = await client.audio.translations.with_raw_response.create(
        model=WHISPER,
        file=("speech.wav", wav_bytes(Fraction(3)), "audio/wav"),
        response_format="verbose_json",
    )
    assert raw.parse().model_dump()["usage"]["seconds"] == 3
    assert int(raw.headers["X-Routstr-Cost-Msats"]) == 3 * AUDIO_MSAT_PER_SECOND
    assert upstream.requests[-1].path == "/v1/audio/translations"


async def test_an_unreadable_file_reserves_max_audio_seconds_and_pays_what_was_heard(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
) -> None:
    url = f"{media_node.url}/v1/audio/transcriptions"
    webm = ("speech.webm", b"\x1aE\xdf\xa3" + bytes(4000), "audio/webm")  # no readable length
    unpaid = await upload(url, {"model": WHISPER}, webm)
    assert_error(unpaid, 402, "payment_required")
    most = MAX_AUDIO_SECONDS * AUDIO_MSAT_PER_SECOND
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(most / 1000)
    upstream.behaviour.unreadable_audio_s = 7.2
    token = await ecash.token(100, mint_url=mint.url)
    paid = await upload(url, {"model": WHISPER}, webm, {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    assert int(paid.headers["X-Routstr-Cost-Msats"]) == 8 * AUDIO_MSAT_PER_SECOND
    assert reservations(media_node)[-1] == (most, "charged", 800)
    # an upstream that reports more than was reserved is charged the reservation only
    upstream.behaviour.unreadable_audio_s = MAX_AUDIO_SECONDS * 3
    token = await ecash.token(100, mint_url=mint.url)
    capped = await upload(url, {"model": WHISPER}, webm, {"X-Cashu": token})
    assert int(capped.headers["X-Routstr-Cost-Msats"]) == most
    assert await ecash.redeem(capped.headers["X-Cashu"]) == change_sat(100, most)


async def test_a_webm_is_reserved_and_charged_by_its_length(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """webm (Matroska, which mutagen does not read) is read too: 2.508 s of Opus is 3
    started seconds, reserved and charged."""
    url = f"{media_node.url}/v1/audio/transcriptions"
    webm = ("speech.webm", shipped("tone.webm"), "audio/webm")
    unpaid = await upload(url, {"model": WHISPER}, webm)
    assert_error(unpaid, 402, "payment_required")
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(
        3 * AUDIO_MSAT_PER_SECOND / 1000
    )
    token = await ecash.token(100, mint_url=mint.url)
    paid = await upload(url, {"model": WHISPER}, webm, {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    assert int(paid.headers["X-Routstr-Cost-Msats"]) == 3 * AUDIO_MSAT_PER_SECOND
    assert reservations(media_node)[-1] == (3 * AUDIO_MSAT_PER_SECOND, "charged", 300)


async def test_a_short_wav_reserves_only_its_seconds(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    url = f"{media_node.url}/v1/audio/transcriptions"
    unpaid = await upload(url, {"model": WHISPER}, ("a.wav", wav_bytes(Fraction(30)), "audio/wav"))
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == 3  # 3000 msat


@pytest.mark.parametrize("knob", ["fail_status", "cut_answer"])
async def test_an_upstream_failure_charges_nothing(
    media_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
    knob: str,
) -> None:
    setattr(upstream.behaviour, knob, 502 if knob == "fail_status" else True)
    token = await ecash.token(60, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.audio.transcriptions.create(
            model=WHISPER, file=("a.wav", wav_bytes(WAV_SECONDS), "audio/wav")
        )
    assert raised.value.status_code == 502
    assert await ecash.redeem(raised.value.response.headers["X-Cashu"]) == 60
    await assert_balanced(media_node)


async def test_upload_errors_cost_nothing(
    media_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    url = f"{media_node.url}/v1/audio/transcriptions"
    token = await ecash.token(50, mint_url=mint.url)
    cash = {"X-Cashu": token}
    wav = ("a.wav", wav_bytes(Fraction(1)), "audio/wav")
    assert_error(await upload(url, {"model": WHISPER}, None, cash), 400, "file_required")
    assert_error(await post(url, {"model": WHISPER}, cash), 400, "file_required")
    assert_error(await upload(url, {}, wav, cash), 400, "model_required")
    assert_error(await upload(url, {"model": IMAGE}, wav, cash), 400, "model_wrong_category")
    assert_error(
        await upload(url, {"model": WHISPER, "provider": "{"}, wav, cash), 400, "invalid_provider"
    )
    broken = b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper'
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=broken,
            headers={"Content-Type": "multipart/form-data; boundary=xyz", **cash},
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_body"
    assert not await ecash.is_spent(token)


@pytest.fixture(scope="module")
async def small_limits_node(
    tmp_path_factory: pytest.TempPathFactory,
    mint: LocalMint,
    _upstream_server: RunningUpstream,
    _provider_servers: Providers,
) -> AsyncIterator[RunningNode]:
    directory = tmp_path_factory.mktemp("small-limits")
    extra = media_toml(_provider_servers.a) + (
        "[limits]\nmax_body_bytes = 100000\nmax_upload_bytes = 1000000\n"
    )
    async with run_node(directory, [mint.url], _upstream_server.url, extra_toml=extra) as node:
        yield node


async def test_uploads_have_a_larger_limit_of_their_own(
    small_limits_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
) -> None:
    node = small_limits_node
    url = f"{node.url}/v1/audio/transcriptions"
    token = await ecash.token(100, mint_url=mint.url)
    fits = wav_bytes(Fraction(100))  # 800 kB: above max_body_bytes, below max_upload_bytes
    answer = await upload(url, {"model": WHISPER}, ("a.wav", fits, "audio/wav"), {"X-Cashu": token})
    assert answer.status == 200, answer.raw
    assert upstream.requests[-1].file_size == len(fits)
    other = await ecash.token(100, mint_url=mint.url)
    big = wav_bytes(Fraction(150))  # 1.2 MB
    refused = await upload(url, {"model": WHISPER}, ("a.wav", big, "audio/wav"), {"X-Cashu": other})
    assert_error(refused, 413, "body_too_large")
    json_refused = await post(
        f"{node.url}/v1/images/generations",
        {"model": IMAGE, "prompt": "x" * 200_000},
        {"X-Cashu": other},
    )
    assert_error(json_refused, 413, "body_too_large")
    assert not await ecash.is_spent(other)
    assert not list(Path(node.data_dir, "uploads").iterdir())  # no spooled file left


async def test_a_failover_sends_the_whole_file_again_to_the_next_provider(
    media_node: RunningNode,
    upstream: RunningUpstream,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    upstream.behaviour.fail_status = 500
    audio = wav_bytes(Fraction(12))
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(media_node, x_cashu=token)
    raw = await client.audio.transcriptions.with_raw_response.create(
        model=WHISPER_ROUTED,
        file=("long.wav", audio, "audio/wav"),
        extra_body={"provider": '{"order": ["fake", "jobs"]}'},
    )
    assert raw.headers["X-Routstr-Provider"] == "jobs"
    assert int(raw.headers["X-Routstr-Cost-Msats"]) == 12 * 50  # jobs: 3 sat a minute
    assert upstream.requests[-1].path == "/v1/audio/transcriptions"
    received = providers.a.requests[-1]
    assert (received.file_name, received.file_size) == ("long.wav", len(audio))
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(100, 600)
