"""POST /v1/images/generations: images returned × the price for their size and quality."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from routstr_node.config import ModelCategory, ModelConfig
from routstr_node.media.answers import ClientGone, client_gone, json_answer, json_object
from routstr_node.media.requests import ImageRequest
from routstr_node.media.route import Attempt, send_json, serve_media
from routstr_node.paid_call import PaidCall
from routstr_node.records import Counted
from routstr_node.routing import Candidate
from routstr_node.upstream import Upstream

PATH = "/v1/images/generations"


async def handle_images(
    request: web.Request, raw: bytes, body: dict[str, Any]
) -> web.StreamResponse:
    def attempt(reading: ImageRequest, model: ModelConfig) -> Attempt:
        async def one(
            call: PaidCall, candidate: Candidate, upstream: Upstream
        ) -> web.StreamResponse:
            answer, _ = await send_json(call, model.id, candidate, upstream, PATH, raw, body)
            data = json_object(answer, candidate.name)
            images = data.get("data")
            returned = len(images) if isinstance(images, list) else 0
            size, quality = data.get("size"), data.get("quality")
            cost = reading.cost(
                candidate.price,
                returned,
                size if isinstance(size, str) else None,
                quality if isinstance(quality, str) else None,
            )
            if client_gone(request):
                raise ClientGone
            charged = await call.settle(cost, Counted(units=returned, unit="image"))
            return json_answer(data, call, model.id, charged, images=returned)

        return one

    def read(_: ModelConfig) -> ImageRequest:
        return ImageRequest.read(body)

    return await serve_media(request, body, ModelCategory.IMAGE, read, attempt)
