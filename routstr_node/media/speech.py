"""POST /v1/audio/speech: the characters of the input; the answer is audio bytes.

The audio is read whole before any of it is sent: its headers carry the cost and the
change, and a provider that breaks off mid-answer is a failed attempt that costs
nothing (and may be failed over), not a cut file the client paid for.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from routstr_node.config import ModelCategory, ModelConfig
from routstr_node.errors import upstream_failed
from routstr_node.failover import UpstreamFailure
from routstr_node.media.answers import ClientGone, binary_answer, client_gone
from routstr_node.media.requests import SpeechRequest
from routstr_node.media.route import Attempt, send_json, serve_media
from routstr_node.paid_call import PaidCall
from routstr_node.records import Counted
from routstr_node.routing import Candidate
from routstr_node.upstream import Upstream

PATH = "/v1/audio/speech"
_ACCEPT = "audio/*, application/octet-stream"


async def handle_speech(
    request: web.Request, raw: bytes, body: dict[str, Any]
) -> web.StreamResponse:
    def attempt(reading: SpeechRequest, model: ModelConfig) -> Attempt:
        async def one(
            call: PaidCall, candidate: Candidate, upstream: Upstream
        ) -> web.StreamResponse:
            audio, resp = await send_json(
                call, model.id, candidate, upstream, PATH, raw, body, accept=_ACCEPT
            )
            if not audio:
                raise UpstreamFailure(upstream_failed(candidate.name, "the answer holds no audio"))
            if client_gone(request):
                raise ClientGone
            await call.settle(
                reading.cost(candidate.price), Counted(units=reading.chars, unit="character")
            )
            return binary_answer(audio, resp.content_type, call)

        return one

    def read(_: ModelConfig) -> SpeechRequest:
        return SpeechRequest.read(body)

    return await serve_media(request, body, ModelCategory.SPEECH, read, attempt)
