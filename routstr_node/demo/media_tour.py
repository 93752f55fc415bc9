"""The demo's media step: an image, speech, a transcription and a video, each paid for
through the OpenAI SDK with one token used as the key (raw HTTP for video, which the
SDK has no method for)."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Callable

import aiohttp
from openai import AsyncOpenAI

IMAGE_MODEL = "gpt-image-1"
SPEECH_MODEL = "tts-1"
TRANSCRIPTION_MODEL = "whisper-1"
VIDEO_MODEL = "sora-2"
MEDIA_SAT = 200

# the media models of the demo node: sat prices, so the costs read as plain numbers
MEDIA_MODELS = [
    {
        "id": IMAGE_MODEL,
        "category": "image",
        "upstream": "demo",
        "image_sat": 20,
        "image_sat_by_size": {"1024x1024": 20, "1024x1024/hd": 40},
    },
    {
        "id": SPEECH_MODEL,
        "category": "speech",
        "upstream": "demo",
        "input_sat_per_1m_chars": 15_000,
    },
    {
        "id": TRANSCRIPTION_MODEL,
        "category": "transcription",
        "upstream": "demo",
        "audio_sat_per_minute": 6,
    },
    {
        "id": VIDEO_MODEL,
        "category": "video",
        "upstream": "demo",
        "video_sat_per_second_by_resolution": {"720p": 8, "1080p": 12},
        "default_video_seconds": 4,
    },
]


def _line(route: str, answer: str, cost_msat: int) -> str:
    return f"   {route:<28}{answer:<40}{cost_msat:>7,} msat"


def _spoken_wav(seconds: int = 3, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(rate)
        writer.writeframes(b"\x80" * seconds * rate)
    return out.getvalue()


async def media_tour(
    token: str, base_url: str, http: aiohttp.ClientSession, say: Callable[[str], None]
) -> int:
    """Pay for each media route with ``token`` as the key; what they cost, in msat."""
    say(f"3. Media, with a {MEDIA_SAT}-sat token as the key: images, speech, transcription, video")
    spent = 0
    async with AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0) as client:
        image = await client.images.with_raw_response.generate(
            model=IMAGE_MODEL, prompt="a lighthouse at dawn", size="1024x1024"
        )
        png = base64.b64decode(image.parse().data[0].b64_json or "")  # type: ignore[index]
        cost = int(image.headers["X-Routstr-Cost-Msats"])
        spent += cost
        say(_line("images.generate", f"a {len(png):,}-byte PNG", cost))
        text = "Ecash pays for every word I say."
        speech = await client.audio.speech.with_raw_response.create(
            model=SPEECH_MODEL, voice="alloy", input=text
        )
        cost = int(speech.headers["X-Routstr-Cost-Msats"])
        spent += cost
        say(_line("audio.speech.create", f"{len(speech.content):,} bytes of MP3", cost))
        heard = await client.audio.transcriptions.with_raw_response.create(
            model=TRANSCRIPTION_MODEL, file=("hello.wav", _spoken_wav(), "audio/wav")
        )
        cost = int(heard.headers["X-Routstr-Cost-Msats"])
        spent += cost
        say(_line("audio.transcriptions.create", repr(heard.parse().text), cost))
    video_body = {"model": VIDEO_MODEL, "prompt": "waves at dusk", "size": "1280x720"}
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{base_url}/video/generations", json=video_body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST /v1/video/generations answered {resp.status}")
        video = await resp.json()
        cost = int(resp.headers["X-Routstr-Cost-Msats"])
    spent += cost
    mp4 = base64.b64decode(video["data"][0]["b64_json"])
    say(_line("POST /v1/video/generations", f"a {len(mp4):,}-byte MP4", cost))
    say('   (each answer says what it cost: X-Routstr-Cost-Msats, and "cost" in JSON bodies)')
    say("")
    return spent
