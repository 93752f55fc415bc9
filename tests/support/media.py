"""The media models of the media tests, their prices, and files to upload.

Sold through the session's fake upstream ("fake") and, for failover and OpenAI's
asynchronous video jobs, a second fake provider ("jobs"). Prices are whole sat so the
expected charges are plain arithmetic in msat.
"""

from __future__ import annotations

import io
import math
import wave
from fractions import Fraction

from routstr_node.demo.upstream import RunningUpstream

IMAGE = "image-model"
IMAGE_ROUTED = "image-routed"  # fake first (any size), then jobs (1024x1024 only)
IMAGE_SIZED = "image-sized"  # priced by size only: other sizes are unsupported
SPEECH = "speech-model"
WHISPER = "whisper-model"
WHISPER_ROUTED = "whisper-routed"  # fake (6 sat a minute), then jobs (3 sat a minute)
VIDEO = "video-model"  # fake: the synchronous route
VIDEO_JOBS = "video-jobs"  # jobs: OpenAI's /videos
MAX_AUDIO_SECONDS = 600

# msat per unit
IMAGE_MSAT = {"1024x1024": 40_000, "1024x1024/hd": 80_000, "256x256": 10_000}
IMAGE_PLAIN_MSAT = 30_000  # image_sat: any other size
CHAR_MSAT = 15  # 15,000 sat per 1M characters
AUDIO_MSAT_PER_SECOND = 100  # 6 sat a minute
VIDEO_MSAT = {"720p": 8_000, "1080p": 12_000}
JOBS_VIDEO_MSAT = {"720p": 5_000}
DEFAULT_VIDEO_SECONDS = 4
JOBS_TIMEOUT_S = 2  # a video job that takes longer is given up


def media_toml(jobs: RunningUpstream) -> str:
    return f"""
[[upstreams]]
name = "jobs"
base_url = "{jobs.url}"
api_key = "sk-jobs"
timeout_s = {JOBS_TIMEOUT_S}
[[models]]
id = "{IMAGE}"
category = "image"
upstream = "fake"
upstream_model = "fake-image"
image_sat = 30
image_sat_by_size = {{"1024x1024" = 40, "1024x1024/hd" = 80, "256x256" = 10}}
[[models]]
id = "{IMAGE_ROUTED}"
category = "image"
  [[models.providers]]
  upstream = "fake"
  image_sat = 30
  [[models.providers]]
  upstream = "jobs"
  image_sat_by_size = {{"1024x1024" = 20}}
[[models]]
id = "{IMAGE_SIZED}"
category = "image"
upstream = "fake"
image_sat_by_size = {{"1024x1024" = 40}}
[[models]]
id = "{SPEECH}"
category = "speech"
upstream = "fake"
input_sat_per_1m_chars = 15000
[[models]]
id = "{WHISPER}"
category = "transcription"
upstream = "fake"
upstream_model = "whisper-1"
audio_sat_per_minute = 6
max_audio_seconds = {MAX_AUDIO_SECONDS}
[[models]]
id = "{WHISPER_ROUTED}"
category = "transcription"
  [[models.providers]]
  upstream = "fake"
  audio_sat_per_minute = 6
  [[models.providers]]
  upstream = "jobs"
  audio_sat_per_minute = 3
[[models]]
id = "{VIDEO}"
category = "video"
upstream = "fake"
video_sat_per_second_by_resolution = {{"720p" = 8, "1080p" = 12}}
default_video_seconds = {DEFAULT_VIDEO_SECONDS}
[[models]]
id = "{VIDEO_JOBS}"
category = "video"
upstream = "jobs"
upstream_model = "sora-2"
video_sat_per_second_by_resolution = {{"720p" = 5}}
default_video_seconds = {DEFAULT_VIDEO_SECONDS}
"""


def change_sat(token_sat: int, cost_msat: int) -> int:
    """What an X-Cashu payment's change is worth (whole sat, rounded down)."""
    return (token_sat * 1000 - cost_msat) // 1000


def wav_bytes(seconds: Fraction, rate: int = 8000) -> bytes:
    """A mono 8-bit WAV of exactly ``seconds`` (``seconds × rate`` whole samples)."""
    frames = seconds * rate
    assert frames.denominator == 1
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(rate)
        writer.writeframes(b"\x80" * int(frames))
    return out.getvalue()


def audio_cost(seconds: Fraction) -> int:
    return math.ceil(seconds) * AUDIO_MSAT_PER_SECOND
