"""The fake upstream's media routes, as OpenAI (and JuntoRouter, for synchronous video)
serve them: images, speech, transcriptions and translations, video.

Uploads are read as they arrive into a temporary file (a provider decodes the audio:
here mutagen reads its duration), never whole into memory. ``cut_answer`` breaks a
media answer off half-way; ``video_sync = False`` makes this an upstream with only
OpenAI's asynchronous video jobs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from typing import IO, Any

from aiohttp import BodyPartReader, web

from routstr_node.demo.behaviour import BEHAVIOUR_KEY, RECORD_KEY, VideoJob
from routstr_node.demo.media_replies import (
    images_body,
    png,
    shipped,
    speech_audio,
    transcription_body,
    video_body,
    video_job,
    video_job_request,
)
from routstr_node.demo.openai_requests import ApiError, parse_json_object
from routstr_node.media.durations import audio_seconds

PUBLIC_MEDIA = "/v1/media/public"  # what anyone may fetch (OpenAI's image URLs)
KEYED_MEDIA = "/v1/media/keyed"  # what only the key opens (a video's content)
_CHUNK = 64 * 1024


def is_upload(request: web.Request) -> bool:
    return request.content_type == "multipart/form-data"


def is_public(request: web.Request) -> bool:
    return request.path.startswith(PUBLIC_MEDIA + "/")


def _media_url(request: web.Request, where: str) -> str:
    return f"{request.scheme}://{request.host}{where}"


async def _answer(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    """``body`` whole, or with ``cut_answer`` only its first half before the connection
    drops (its Content-Length promised the rest)."""
    if not request.app[BEHAVIOUR_KEY].cut_answer:
        return web.Response(body=body, content_type=content_type)
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


async def _json_answer(request: web.Request, data: Any) -> web.StreamResponse:
    return await _answer(request, json.dumps(data).encode(), "application/json")


async def _images(request: web.Request) -> web.StreamResponse:
    behaviour = request.app[BEHAVIOUR_KEY]
    body = parse_json_object(await request.read())
    url = _media_url(request, PUBLIC_MEDIA)
    return await _json_answer(request, images_body(body, url, with_usage=not behaviour.omit_usage))


async def _speech(request: web.Request) -> web.StreamResponse:
    body = parse_json_object(await request.read())
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input")
    if not isinstance(body.get("model"), str):
        raise ApiError(400, "you must provide a model parameter", param="model")
    audio, content_type = speech_audio(text, str(body.get("response_format") or "mp3"))
    return await _answer(request, audio, content_type)


async def _form(request: web.Request, spool: IO[bytes]) -> tuple[dict[str, str], str | None, int]:
    """A multipart form's text fields, and its file (written to ``spool``): name, size."""
    fields: dict[str, str] = {}
    file_name: str | None = None
    size = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is None:
            fields[part.name] = (await part.read()).decode()
            continue
        if part.name != "file":
            await part.release()
            continue
        file_name = part.filename
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            await asyncio.to_thread(spool.write, chunk)
    return fields, file_name, size


def _transcribe(translate: bool) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.app[BEHAVIOUR_KEY]
        if not is_upload(request):
            raise ApiError(400, "The request must be multipart/form-data with a file.")
        with tempfile.TemporaryFile() as spool:
            fields, file_name, size = await _form(request, spool)
            record = request[RECORD_KEY]
            record.form, record.file_name, record.file_size = fields, file_name, size
            if file_name is None:
                raise ApiError(400, "Missing required parameter: 'file'.", param="file")
            # the provider hears the audio: its length, as the node reads it too
            heard = await asyncio.to_thread(audio_seconds, spool)
        seconds = float(heard) if heard is not None else behaviour.unreadable_audio_s
        answer, content_type = transcription_body(
            seconds, fields, translate=translate, with_usage=not behaviour.omit_usage
        )
        if isinstance(answer, dict):
            return await _json_answer(request, answer)
        return await _answer(request, answer.encode(), content_type)

    return handle


async def _video_sync(request: web.Request) -> web.StreamResponse:
    behaviour = request.app[BEHAVIOUR_KEY]
    if not behaviour.video_sync:  # as OpenAI answers a route it does not have
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})")
    body = parse_json_object(await request.read())
    url = _media_url(request, KEYED_MEDIA)
    return await _json_answer(request, video_body(body, url, with_usage=not behaviour.omit_usage))


def _job_state(job: VideoJob, job_s: float) -> tuple[str, int]:
    elapsed = time.monotonic() - job.created
    if elapsed < job_s:
        return ("queued" if elapsed < job_s / 4 else "in_progress"), int(100 * elapsed / job_s)
    return ("failed" if job.fails else "completed"), 100


async def _create_job(request: web.Request) -> web.StreamResponse:
    behaviour = request.app[BEHAVIOUR_KEY]
    if is_upload(request):
        with tempfile.TemporaryFile() as spool:
            fields: dict[str, Any] = (await _form(request, spool))[0]
    else:
        fields = parse_json_object(await request.read())
    request[RECORD_KEY].form = {k: str(v) for k, v in fields.items()}
    checked = video_job_request(fields)
    job_id = "video_" + secrets.token_hex(12)
    job = VideoJob(checked, time.monotonic(), behaviour.video_job_fails)
    behaviour.video_jobs[job_id] = job
    return web.json_response(video_job(job_id, checked, time.time(), "queued", 0))


def _job(request: web.Request) -> tuple[str, VideoJob]:
    job_id = request.match_info["video_id"]
    job = request.app[BEHAVIOUR_KEY].video_jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"Video with id '{job_id}' not found.", code="video_not_found")
    return job_id, job


async def _get_job(request: web.Request) -> web.StreamResponse:
    job_id, job = _job(request)
    status, progress = _job_state(job, request.app[BEHAVIOUR_KEY].video_job_s)
    created = time.time() - (time.monotonic() - job.created)
    return web.json_response(video_job(job_id, job.request, created, status, progress))


async def _job_content(request: web.Request) -> web.StreamResponse:
    _, job = _job(request)
    status, _ = _job_state(job, request.app[BEHAVIOUR_KEY].video_job_s)
    if status != "completed":
        raise ApiError(404, "Video is not ready yet, poll GET /videos/{video_id}.")
    return await _answer(request, shipped("clip.mp4"), "video/mp4")


async def _media(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "clip.mp4":
        return await _answer(request, shipped("clip.mp4"), "video/mp4")
    if name.startswith("image-") and name.endswith(".png"):
        return web.Response(body=png(name), content_type="image/png")
    raise ApiError(404, f"No such file: {name}")


def add_media_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/images/generations", _images)
    router.add_post("/v1/audio/speech", _speech)
    router.add_post("/v1/audio/transcriptions", _transcribe(translate=False))
    router.add_post("/v1/audio/translations", _transcribe(translate=True))
    router.add_post("/v1/video/generations", _video_sync)
    router.add_post("/v1/videos", _create_job)
    router.add_get("/v1/videos/{video_id}", _get_job)
    router.add_get("/v1/videos/{video_id}/content", _job_content)
    router.add_get(PUBLIC_MEDIA + "/{name}", _media)
    router.add_get(KEYED_MEDIA + "/{name}", _media)
