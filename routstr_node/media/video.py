"""POST /v1/video/generations: seconds of video × the rate for the resolution returned.

Making a video takes minutes: the client's connection stays open, the whole attempt
bounded by the upstream's ``timeout_s``. An upstream that serves the same synchronous
route gets the request as it is (its name for the model, and the duration reserved
for when the client named none); one that answers that route 404 has OpenAI's
asynchronous jobs instead, is remembered as such and driven by video_jobs. A video URL
on the upstream's own origin (one its key opens) is fetched and returned as
``b64_json``. A client that leaves before its video is delivered pays nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
from aiohttp import web

from routstr_node.config import ModelCategory, ModelConfig
from routstr_node.errors import upstream_failed, upstream_status_error, upstream_timeout
from routstr_node.failover import UpstreamFailure, open_answer, read_answer
from routstr_node.media.answers import (
    ClientGone,
    client_gone,
    json_answer,
    json_object,
    unless_client_leaves,
)
from routstr_node.media.requests import VideoRequest, seconds_of
from routstr_node.media.route import NOT_SENT, Attempt, serve_media
from routstr_node.media.video_jobs import Video, video_by_job
from routstr_node.paid_call import PaidCall
from routstr_node.records import Counted
from routstr_node.request_body import upstream_body
from routstr_node.routing import Candidate
from routstr_node.upstream import Payload, Upstream

PATH = "/v1/video/generations"
_NO_ROUTE = (404, 405)  # how an upstream without the synchronous route answers it


async def handle_video(
    request: web.Request, raw: bytes, body: dict[str, Any]
) -> web.StreamResponse:
    def read(model: ModelConfig) -> VideoRequest:
        return VideoRequest.read(body, model.default_video_seconds)

    def attempt(reading: VideoRequest, model: ModelConfig) -> Attempt:
        async def make(call: PaidCall, candidate: Candidate, upstream: Upstream) -> Video:
            try:
                async with asyncio.timeout(upstream.timeout_s):
                    if not upstream.video_jobs:
                        made = await _synchronous(
                            call, model.id, candidate, upstream, raw, body, reading
                        )
                        if made is not None:
                            return made
                        upstream.video_jobs = True
                    prompt = str(body["prompt"])
                    return await video_by_job(call, model.id, candidate, upstream, prompt, reading)
            except TimeoutError:
                raise UpstreamFailure(upstream_timeout(candidate.name)) from None

        async def one(
            call: PaidCall, candidate: Candidate, upstream: Upstream
        ) -> web.StreamResponse:
            video = await unless_client_leaves(request, make(call, candidate, upstream))
            seconds = seconds_of(video.seconds)
            units, resolution = reading.billed(seconds, video.size)
            cost = reading.cost(candidate.price, seconds, video.size)
            if client_gone(request):
                raise ClientGone
            charged = await call.settle(cost, Counted(units=units, unit="second"))
            return json_answer(
                video.answer,
                call,
                model.id,
                charged,
                units=units,
                unitType="second",
                resolution=resolution,
            )

        return one

    return await serve_media(request, body, ModelCategory.VIDEO, read, attempt)


async def _synchronous(
    call: PaidCall,
    model_id: str,
    candidate: Candidate,
    upstream: Upstream,
    raw: bytes,
    body: dict[str, Any],
    reading: VideoRequest,
) -> Video | None:
    """The upstream's synchronous answer; None when it has no such route."""
    name = candidate.name
    added = {} if reading.duration_given else {"duration": reading.seconds}
    forwarded = upstream_body(
        raw, body, candidate.offer.upstream_model, asks_usage=False, added=added, removed=NOT_SENT
    )
    opened = await open_answer(
        call.node, model_id, upstream, PATH, Payload(forwarded), stream=False
    )
    answer = await read_answer(opened, name)
    status = opened.response.status
    if status in _NO_ROUTE and not _about_the_model(answer):
        return None
    if status >= 400:
        raise upstream_status_error(
            name, status, answer, opened.response.headers.get("Retry-After")
        )
    data = json_object(answer, name)
    await _inline_keyed_urls(data, upstream, name)
    found = data.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    seconds = usage.get("units") if usage.get("unitType", "second") == "second" else None
    size = usage.get("resolution") or data.get("size")
    return Video(data, seconds or usage.get("seconds"), size if isinstance(size, str) else None)


def _about_the_model(answer: bytes) -> bool:
    """Whether a 404 is about the model (model_not_found), not the route."""
    try:
        error = json.loads(answer).get("error")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(error, dict) and (
        error.get("code") == "model_not_found" or error.get("param") == "model"
    )


async def _inline_keyed_urls(data: dict[str, Any], upstream: Upstream, name: str) -> None:
    """A video URL the client could not open without the upstream's key becomes
    ``b64_json``: fetched here, with the key (which goes to no other origin)."""
    items = data.get("data")
    for item in items if isinstance(items, list) else []:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not upstream.owns(url):
            continue
        try:
            async with await upstream.get(url, accept="video/*") as resp:
                content = await resp.read()
                status, content_type = resp.status, resp.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailure(upstream_failed(name, type(exc).__name__)) from None
        if status >= 400 or not content:
            raise UpstreamFailure(upstream_failed(name, f"its video URL answered {status}"))
        del item["url"]
        item["b64_json"] = base64.b64encode(content).decode()
        item.setdefault("content_type", content_type)
