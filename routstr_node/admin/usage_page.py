"""The admin panel's usage page and the files it loads, all served by the node itself.

The page reads /admin/api/usage and /admin/api/requests (behind the admin session,
like every /admin/api/ route) and draws them with Chart.js, vendored in
``admin/assets`` (MIT, its licence beside it): no CDN, so the panel works offline.
Its CSP allows scripts and styles of its own origin only: nothing inline runs.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from routstr_node.errors import not_found

_ASSETS = {
    "chart.umd.min.js": "text/javascript",
    "usage.js": "text/javascript",
    "usage.css": "text/css",
}
_SECURITY = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/usage", usage_page)
    app.router.add_get("/admin/assets/{name}", asset)


@functools.cache
def _file(*parts: str) -> bytes:
    return resources.files("routstr_node.admin").joinpath(*parts).read_bytes()


async def usage_page(request: web.Request) -> web.Response:
    headers = {**_SECURITY, "Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-store"}
    return web.Response(body=_file("usage.html"), content_type="text/html", headers=headers)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise not_found("not_found", f"no file {name}")
    headers = {**_SECURITY, "Cache-Control": "no-cache"}
    return web.Response(
        body=_file("assets", name), content_type=content_type, charset="utf-8", headers=headers
    )
