"""Media for the fake upstream: real small files and OpenAI-shaped media answers.

A PNG drawn here (zlib), WAVs of exact durations (stdlib ``wave``), and two tiny
files made once with ffmpeg and shipped beside this module: a one-second MP3 tone and
a one-second MP4 clip. Pure functions, no HTTP.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import struct
import time
import wave
import zlib
from importlib import resources
from typing import Any

from routstr_node.demo.openai_requests import ApiError, JSONObject

PNG_SIDE = 16  # the images drawn are small: a stand-in provider's pictures
AUDIO_RATE = 8000  # samples a second of the WAVs made here (mono, 8 bit)
SPEECH_SECONDS_PER_CHAR = 0.06  # about how fast a voice reads
VIDEO_SECONDS = ("4", "8", "12")  # what OpenAI's video jobs accept


def png(seed: str, side: int = PNG_SIDE) -> bytes:
    """A ``side``×``side`` PNG of one colour picked from ``seed``."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * side  # filter byte, then RGB pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * side))
        + chunk(b"IEND", b"")
    )


def wav(seconds: float, rate: int = AUDIO_RATE) -> bytes:
    """A mono 8-bit WAV of exactly ``round(seconds × rate)`` samples: a quiet tone."""
    frames = round(seconds * rate)
    samples = bytes(128 + round(20 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return out.getvalue()


@functools.cache
def shipped(name: str) -> bytes:
    """One of the small files shipped with the demo (``tone.mp3``, ``tone.webm``,
    ``clip.mp4``)."""
    return resources.files("routstr_node.demo").joinpath("media", name).read_bytes()


SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def speech_audio(text: str, response_format: str) -> tuple[bytes, str]:
    """What a voice reading ``text`` sounds like here, and its content type."""
    if response_format not in SPEECH_FORMATS:
        known = ", ".join(SPEECH_FORMATS)
        raise ApiError(
            400,
            f"Unsupported response_format '{response_format}' here ({known}).",
            param="response_format",
        )
    if response_format == "mp3":
        return shipped("tone.mp3"), SPEECH_FORMATS["mp3"]
    audio = wav(max(0.1, len(text) * SPEECH_SECONDS_PER_CHAR))
    if response_format == "pcm":
        audio = audio[44:]  # the samples alone (a WAV's canonical header is 44 bytes)
    return audio, SPEECH_FORMATS[response_format]


def _model(body: JSONObject) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    return model


def _prompt(body: JSONObject, name: str = "prompt") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Missing required parameter: '{name}'.", param=name)
    return value


def images_body(body: JSONObject, media_url: str, *, with_usage: bool) -> JSONObject:
    """OpenAI's answer to POST /images/generations: ``n`` pictures, as base64 or URLs."""
    _model(body)
    prompt = _prompt(body)
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 10:
        raise ApiError(400, "n must be between 1 and 10.", param="n")
    size = body.get("size") or "1024x1024"
    quality = body.get("quality") or "standard"
    as_url = body.get("response_format") == "url"
    data: list[JSONObject] = []
    for index in range(n):
        image = png(f"{prompt}/{index}")
        if as_url:
            data.append({"url": f"{media_url}/image-{index}.png", "revised_prompt": prompt})
        else:
            data.append({"b64_json": base64.b64encode(image).decode(), "revised_prompt": prompt})
    answer: JSONObject = {
        "created": int(time.time()),
        "data": data,
        "size": "1024x1024" if size == "auto" else size,
        "quality": "high" if quality == "auto" else quality,
        "output_format": "png",
    }
    if with_usage:
        words = len(prompt.split())
        answer["usage"] = {
            "input_tokens": words,
            "output_tokens": 1056 * n,
            "total_tokens": words + 1056 * n,
            "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
        }
    return answer


def transcription_body(
    seconds: float, fields: dict[str, str], *, translate: bool, with_usage: bool
) -> tuple[str | JSONObject, str]:
    """What OpenAI answers a transcription (or translation) of ``seconds`` of audio,
    in its ``response_format``: a JSON object, or text (with its content type)."""
    _model(fields)
    text = f"{seconds:.2f} seconds of audio, {'translated' if translate else 'transcribed'}."
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    match fields.get("response_format") or "json":
        case "json":
            answer: JSONObject = {"text": text}
            if with_usage:
                answer["usage"] = usage
            return answer, "application/json"
        case "verbose_json":
            answer = {
                "task": "translate" if translate else "transcribe",
                "language": "english",
                "duration": round(seconds, 2),
                "text": text,
                "segments": [{"id": 0, "start": 0.0, "end": round(seconds, 2), "text": text}],
            }
            if with_usage:
                answer["usage"] = usage
            return answer, "application/json"
        case "text":
            return text + "\n", "text/plain"
        case "srt":
            return f"1\n00:00:00,000 --> {_clock(seconds, ',')}\n{text}\n\n", "text/plain"
        case "vtt":
            return f"WEBVTT\n\n00:00:00.000 --> {_clock(seconds, '.')}\n{text}\n\n", "text/vtt"
        case other:
            raise ApiError(400, f"Invalid response_format '{other}'.", param="response_format")


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def video_resolution(size: str) -> str:
    """``1280x720`` → ``720p`` (the shorter side)."""
    width, _, height = size.partition("x")
    return f"{min(int(width), int(height))}p" if width.isdigit() and height.isdigit() else size


def video_body(body: JSONObject, media_url: str, *, with_usage: bool) -> JSONObject:
    """The synchronous answer to POST /video/generations (JuntoRouter's shape)."""
    model = _model(body)
    _prompt(body)
    duration = body.get("duration") or 4
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        raise ApiError(400, "duration must be a positive number of seconds.", param="duration")
    size = body.get("size") or "1280x720"
    clip = shipped("clip.mp4")
    item: JSONObject = {"content_type": "video/mp4"}
    if body.get("response_format") == "url":
        item["url"] = f"{media_url}/clip.mp4"
    else:
        item["b64_json"] = base64.b64encode(clip).decode()
    answer: JSONObject = {"created": int(time.time()), "model": model, "data": [item]}
    if with_usage:
        answer["usage"] = {
            "units": duration,
            "unitType": "second",
            "resolution": video_resolution(size) if "x" in size else size,
        }
    return answer


def video_job(
    job_id: str, request: dict[str, Any], created: float, status: str, progress: int
) -> JSONObject:
    """OpenAI's video object (POST /videos, GET /videos/{id})."""
    job: JSONObject = {
        "id": job_id,
        "object": "video",
        "created_at": int(created),
        "status": status,
        "model": request["model"],
        "progress": progress,
        "seconds": request["seconds"],
        "size": request["size"],
        "quality": "standard",
        "remixed_from_video_id": None,
        "completed_at": int(time.time()) if status == "completed" else None,
        "expires_at": int(created) + 86400 if status == "completed" else None,
        "error": None,
    }
    if status == "failed":
        job["error"] = {
            "code": "video_generation_failed",
            "message": "The video could not be made.",
        }
    return job


def video_job_request(fields: dict[str, Any]) -> dict[str, Any]:
    """POST /videos checked as OpenAI checks it: model, prompt, seconds, size."""
    model = _model(fields)
    _prompt(fields)
    seconds = str(fields.get("seconds") or "4")
    if seconds not in VIDEO_SECONDS:
        raise ApiError(
            400,
            f"Invalid value: '{seconds}'. Supported values are: {', '.join(VIDEO_SECONDS)}.",
            param="seconds",
        )
    size = str(fields.get("size") or "720x1280")
    if video_resolution(size) == size:
        raise ApiError(400, f"Invalid size '{size}'.", param="size")
    return {"model": model, "seconds": seconds, "size": size}
