"""POST /v1/audio/transcriptions and /translations: started seconds of audio.

The upload (multipart: file, model, language, prompt, response_format, temperature)
is spooled to disk as it arrives; its duration, read from the file, is what is
reserved (unreadable: the model's ``max_audio_seconds``). The charge is the
upstream's reported seconds (``usage.seconds``, or verbose_json's ``duration``), else
the measured duration, never above the reservation. The file goes to the upstream
from disk, streamed, and again from its start to the next provider after a failover.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import aiohttp
from aiohttp import web

from routstr_node.config import ModelCategory, ModelConfig
from routstr_node.errors import invalid_request, upstream_status_error
from routstr_node.failover import open_sent, read_answer
from routstr_node.media.answers import (
    ClientGone,
    binary_answer,
    client_gone,
    json_answer,
    json_object,
)
from routstr_node.media.durations import audio_seconds
from routstr_node.media.requests import TranscriptionRequest, seconds_of
from routstr_node.media.route import NOT_SENT, Attempt, serve_media
from routstr_node.media.upload import FILE_FIELD, Upload, received_upload, upstream_form
from routstr_node.paid_call import PaidCall
from routstr_node.records import Counted
from routstr_node.routing import Candidate
from routstr_node.state import NODE
from routstr_node.upstream import Upstream

PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
UPLOADS_DIR = "uploads"  # under data_dir: spooled uploads (unnamed, gone when closed)


async def handle_transcription(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    settings = node.settings
    limits = settings.limits
    spool_dir = settings.node.data_dir / UPLOADS_DIR
    async with received_upload(
        request, limits.max_upload_bytes, limits.body_timeout_s, spool_dir
    ) as upload:
        uploaded = upload.file
        if uploaded is None or uploaded.size == 0:
            raise invalid_request(
                "file_required",
                "the request must carry the audio in a 'file' part",
                param=FILE_FIELD,
            )
        measured = await asyncio.to_thread(audio_seconds, uploaded.spool)

        def read(model: ModelConfig) -> TranscriptionRequest:
            return TranscriptionRequest(measured, model.max_audio_seconds)

        return await serve_media(
            request,
            _form_body(upload),
            ModelCategory.TRANSCRIPTION,
            read,
            _attempt(request, upload),
        )


def _form_body(upload: Upload) -> dict[str, Any]:
    """The form's fields as a request body; a `provider` field is its JSON object."""
    body: dict[str, Any] = dict(upload.fields)
    if "provider" in body:
        try:
            body["provider"] = json.loads(body["provider"])
        except ValueError:
            raise invalid_request(
                "invalid_provider",
                "the form field 'provider' must be a JSON object",
                param="provider",
            ) from None
    return body


def _attempt(
    request: web.Request, upload: Upload
) -> Callable[[TranscriptionRequest, ModelConfig], Attempt]:
    def attempt(reading: TranscriptionRequest, model: ModelConfig) -> Attempt:
        async def one(
            call: PaidCall, candidate: Candidate, upstream: Upstream
        ) -> web.StreamResponse:
            name = candidate.name
            # the form's file stays open until the answer is read (and the sending over)
            with upstream_form(upload, candidate.offer.upstream_model, NOT_SENT) as form:

                def send() -> Awaitable[aiohttp.ClientResponse]:
                    return upstream.post_form(request.path, form)

                opened = await open_sent(call.node, model.id, name, send)
                answer = await read_answer(opened, name)
            resp = opened.response
            if resp.status >= 400:
                raise upstream_status_error(
                    name, resp.status, answer, resp.headers.get("Retry-After")
                )
            data = json_object(answer, name) if resp.content_type == "application/json" else None
            seconds = reading.seconds(_reported_seconds(data) if data is not None else None)
            cost = reading.cost(candidate.price, seconds)
            if client_gone(request):
                raise ClientGone
            charged = await call.settle(cost, Counted(units=seconds, unit="second"))
            if data is not None:
                return json_answer(data, call, model.id, charged, seconds=seconds)
            return binary_answer(answer, resp.content_type, call, charset=resp.charset)

        return one

    return attempt


def _reported_seconds(data: dict[str, Any]) -> Fraction | None:
    """What the upstream says it heard: ``usage.seconds`` (whisper's ``duration`` usage),
    else verbose_json's ``duration``; None when it says neither (token usage, text)."""
    usage = data.get("usage")
    if isinstance(usage, dict) and (seconds := seconds_of(usage.get("seconds"))) is not None:
        return seconds
    return seconds_of(data.get("duration"))
