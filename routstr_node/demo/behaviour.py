"""What a test can turn on the fake upstream, and what it recorded."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


@dataclass
class RecordedRequest:
    """One request as the upstream received it (what the node forwarded). A multipart
    upload is not kept: its text fields are, with the file's name and size."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    form: dict[str, str] | None = None
    file_name: str | None = None
    file_size: int | None = None


@dataclass
class VideoJob:
    """An asynchronous video job (OpenAI's /videos) and when it was created."""

    request: dict[str, Any]
    created: float
    fails: bool


@dataclass
class UpstreamBehaviour:
    """Knobs a test turns between requests; read afresh for every request."""

    expected_api_key: str | None = None
    fail_status: int | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    omit_usage: bool = False
    cut_after_chunks: int | None = None
    reply_words: int | None = None
    unknown_params: list[str] = field(default_factory=list)  # refused as a strict API does
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    requests: list[RecordedRequest] = field(default_factory=list)
    # media (section 10)
    cut_answer: bool = False  # a media answer breaks off half-way (the connection drops)
    video_sync: bool = True  # False: no /video/generations (404), only OpenAI's /videos jobs
    video_job_s: float = 0.2  # how long an asynchronous video job takes
    video_job_fails: bool = False  # jobs end "failed"
    video_jobs: dict[str, VideoJob] = field(default_factory=dict)
    # what the provider hears in audio whose duration the node cannot read (a provider
    # decodes what carries no readable length: a browser's webm often names none)
    unreadable_audio_s: float = 3.0

    def reset(self) -> None:
        """Back to a well-behaved upstream with no recorded requests."""
        fresh = UpstreamBehaviour()
        for knob in fields(self):
            setattr(self, knob.name, getattr(fresh, knob.name))


BEHAVIOUR_KEY = web.AppKey("behaviour", UpstreamBehaviour)
RECORD_KEY: web.RequestKey[RecordedRequest] = web.RequestKey("record")
