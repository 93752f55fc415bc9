"""OpenAI's asynchronous video jobs, driven by the node: create, poll, download.

POST /videos (multipart: model, prompt, seconds, size), then GET /videos/{id} until it
is ``completed`` (or ``failed``), then GET /videos/{id}/content: the MP4. The client
never sees the job: it gets the synchronous answer, the video as ``b64_json`` (the
content URL opens only with the upstream's key). A job that fails, or an upstream that
breaks off, is a failed attempt that costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp

from routstr_node.errors import upstream_failed, upstream_status_error
from routstr_node.failover import UpstreamFailure, open_sent, read_answer
from routstr_node.media.answers import json_object
from routstr_node.media.requests import VideoRequest
from routstr_node.media.upload import text_form
from routstr_node.paid_call import PaidCall
from routstr_node.routing import Candidate
from routstr_node.upstream import Upstream

log = logging.getLogger(__name__)

JOBS_PATH = "/v1/videos"
FIRST_POLL_S = 0.1  # then twice as long each time, up to LAST_POLL_S
LAST_POLL_S = 5.0
POLL_FAILURES = 3  # polls in a row that may fail (a blip) before the attempt fails
_ENDED = ("failed", "cancelled", "expired")


@dataclass(frozen=True, slots=True)
class Video:
    """A video made by a provider, in the synchronous answer's shape."""

    answer: dict[str, Any]  # {"created", "model", "data": [...], "usage"?}
    seconds: Any  # what the provider says it made (a number or a numeric string)
    size: str | None  # its size or resolution


def job_size(request: VideoRequest) -> str | None:
    """The ``size`` OpenAI's jobs take (WIDTHxHEIGHT): as given, or for a resolution
    name its landscape 16:9 size (``720p``: ``1280x720``)."""
    if request.size is None or "x" in request.size.lower():
        return request.size
    if request.resolution is None or not request.resolution.endswith("p"):
        return request.size
    height = int(request.resolution[:-1])
    return f"{round(height * 16 / 9)}x{height}"


async def video_by_job(
    call: PaidCall,
    model_id: str,
    candidate: Candidate,
    upstream: Upstream,
    prompt: str,
    request: VideoRequest,
) -> Video:
    name = candidate.name
    fields = {"model": candidate.offer.upstream_model, "prompt": prompt}
    fields["seconds"] = str(request.seconds)
    size = job_size(request)
    if size is not None:
        fields["size"] = size

    def create() -> Awaitable[aiohttp.ClientResponse]:
        return upstream.post_form(JOBS_PATH, text_form(fields.items()))

    opened = await open_sent(call.node, model_id, name, create)
    raw = await read_answer(opened, name)
    if opened.response.status >= 400:
        raise upstream_status_error(
            name, opened.response.status, raw, opened.response.headers.get("Retry-After")
        )
    job = json_object(raw, name)
    job_id = job.get("id")
    if not isinstance(job_id, str) or not job_id or "/" in job_id:
        raise UpstreamFailure(upstream_failed(name, "the video job has no id"))
    job = await _finished(upstream, name, job_id, job)
    content = await _content(upstream, name, job_id)
    created = job.get("created_at")
    answer: dict[str, Any] = {
        "created": created if isinstance(created, int) else 0,
        "model": model_id,
        "data": [{"b64_json": base64.b64encode(content).decode(), "content_type": "video/mp4"}],
    }
    size = job.get("size")
    return Video(answer, job.get("seconds"), size if isinstance(size, str) else None)


async def _finished(
    upstream: Upstream, name: str, job_id: str, job: dict[str, Any]
) -> dict[str, Any]:
    """The job once it completed; UpstreamFailure when it ended otherwise."""
    wait = FIRST_POLL_S
    failures = 0
    while job.get("status") != "completed":
        if job.get("status") in _ENDED:
            error = job.get("error")
            why = error.get("message") if isinstance(error, dict) else None
            raise UpstreamFailure(
                upstream_failed(
                    name, f"the video job {job.get('status')}: {why or 'no reason given'}"
                )
            )
        await asyncio.sleep(wait)
        wait = min(wait * 2, LAST_POLL_S)
        try:
            async with await upstream.get(f"{JOBS_PATH}/{job_id}") as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures += 1
            if failures > POLL_FAILURES:
                raise UpstreamFailure(upstream_failed(name, type(exc).__name__)) from None
            continue
        if status >= 500 or status == 429:
            failures += 1
            if failures > POLL_FAILURES:
                raise UpstreamFailure(upstream_status_error(name, status, raw))
            continue
        if status >= 400:
            raise UpstreamFailure(upstream_status_error(name, status, raw))
        failures = 0
        job = json_object(raw, name)
    return job


async def _content(upstream: Upstream, name: str, job_id: str) -> bytes:
    try:
        async with await upstream.get(f"{JOBS_PATH}/{job_id}/content", accept="video/mp4") as resp:
            content = await resp.read()
            status = resp.status
    except TimeoutError:
        raise UpstreamFailure(upstream_failed(name, "the video download timed out")) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure(upstream_failed(name, type(exc).__name__)) from None
    if status >= 400 or not content:
        raise UpstreamFailure(
            upstream_status_error(name, status, content)
            if status >= 400
            else upstream_failed(name, "the video is empty")
        )
    return content
