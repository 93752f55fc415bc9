"""The media routes of the node's application (contract section 10)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from routstr_node.config import ModelCategory
from routstr_node.media import images, speech, transcription, video
from routstr_node.request_body import parse_json_object, read_body
from routstr_node.state import NODE

JsonHandler = Callable[[web.Request, bytes, dict[str, Any]], Awaitable[web.StreamResponse]]

#: the routes, by the category of model each serves
MEDIA_PATHS: dict[str, ModelCategory] = {
    images.PATH: ModelCategory.IMAGE,
    speech.PATH: ModelCategory.SPEECH,
    **dict.fromkeys(transcription.PATHS, ModelCategory.TRANSCRIPTION),
    video.PATH: ModelCategory.VIDEO,
}


def _json_route(handle: JsonHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        limits = request.app[NODE].settings.limits
        raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        return await handle(request, raw, parse_json_object(raw))

    return route


def add_routes(app: web.Application) -> None:
    app.router.add_post(images.PATH, _json_route(images.handle_images))
    app.router.add_post(speech.PATH, _json_route(speech.handle_speech))
    app.router.add_post(video.PATH, _json_route(video.handle_video))
    for path in transcription.PATHS:
        app.router.add_post(path, transcription.handle_transcription)


def category_paths(category: ModelCategory) -> list[str]:
    """The media routes that serve a model of ``category``."""
    return [path for path, served in MEDIA_PATHS.items() if served is category]
