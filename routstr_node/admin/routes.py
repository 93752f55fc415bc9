"""The admin panel's door: login, logout, the page, and the guard on /admin/api/*.

A session is an HttpOnly, SameSite=Strict cookie; the documented legacy cookie
`admin_password=<password>` is accepted too. A state-changing request that a browser
says comes from another site is refused, whatever cookie it carries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from routstr_node.admin import books_api
from routstr_node.admin.json_body import admin_body, admin_json
from routstr_node.admin.local_key import remove_local_key, write_local_key
from routstr_node.admin.password import AdminPassword, generate_password, hash_off_loop
from routstr_node.admin.settings_api import (
    follow_stored,
    get_settings,
    patch_settings,
    restore_at_start,
)
from routstr_node.admin.signin import (
    SESSION_COOKIE,
    admin_required,
    password_matches,
    signed_in,
)
from routstr_node.admin.state import ADMIN, AdminState
from routstr_node.errors import ApiError, invalid_request, unauthorized
from routstr_node.state import NODE
from wallet import SettingsStore, StoredSettings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_API = "/admin/api/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_admin_context)
    app.router.add_get("/admin", _to_panel)
    app.router.add_get("/admin/", panel)
    app.router.add_post("/admin/login", login)
    app.router.add_post("/admin/logout", logout)
    app.router.add_get("/admin/api/settings", get_settings)
    app.router.add_patch("/admin/api/settings", patch_settings)
    app.router.add_get("/admin/books", books_page)
    books_api.add_routes(app)


async def _admin_context(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    stored = await node.wallet.settings.load()
    admin = AdminState(
        password=await _password(node.wallet.settings, node.settings.admin.password, stored),
        file_settings=node.settings,
        overrides=json.loads(stored.overrides),
    )
    admin.password_hash = stored.admin_password_hash
    app[ADMIN] = admin
    await restore_at_start(app, admin)
    data_dir = node.settings.node.data_dir
    local = write_local_key(data_dir)
    admin.local_key = local.key
    # one node in several processes: a change made in another process's panel, followed
    following = (
        asyncio.create_task(follow_stored(app), name="admin-follow")
        if node.wallet.store.shared
        else None
    )
    try:
        yield
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        remove_local_key(data_dir, local)


async def _password(
    store: SettingsStore, configured: str | None, stored: StoredSettings
) -> AdminPassword:
    """One set in the panel wins, then the configured one; with neither, one is
    generated at the first start, printed that once, and kept only as its hash."""
    if stored.admin_password_origin == "admin" and stored.admin_password_hash:
        return AdminPassword(hashed=stored.admin_password_hash)
    if configured:
        return AdminPassword(plain=configured)
    if stored.admin_password_hash:
        return AdminPassword(hashed=stored.admin_password_hash)
    password = generate_password()
    hashed = await hash_off_loop(password)
    await store.save_password_hash(hashed, "generated")
    # on the terminal, never in the logs
    print(f"admin password (shown only this once): {password}", flush=True)
    return AdminPassword(hashed=hashed)


@web.middleware
async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Same-site for every state-changing admin request; a session for /admin/api/*."""
    path = request.path
    if path == "/admin" or path.startswith("/admin/"):
        if request.method not in _SAFE_METHODS and not _same_site(request):
            raise ApiError(
                403,
                "permission_error",
                "forbidden_origin",
                "admin changes are only taken from the admin panel's own pages",
            )
        if path.startswith(_API) and not await signed_in(request):
            raise admin_required()
    return await handler(request)


def _same_site(request: web.Request) -> bool:
    """A browser names the page a request comes from (Origin) or at least whether it is
    cross-site (Sec-Fetch-Site); a client without either (curl, scripts) is no browser
    that a forged page could drive."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc.lower() in _own_hosts(request)
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def _own_hosts(request: web.Request) -> set[str]:
    """The names this node is reached by: the Host header, and behind a reverse proxy
    that rewrites it, the proxy's X-Forwarded-Host or the configured public_url (a page
    on another site cannot add X-Forwarded-Host to a request without a CORS preflight,
    which the admin routes never allow)."""
    hosts = {request.host}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip())
    public_url = request.app[NODE].settings.node.public_url
    if public_url:
        hosts.add(urlsplit(public_url).netloc)
    return {h.lower() for h in hosts}


async def _to_panel(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/admin/")


@functools.cache
def _panel(name: str = "panel.html") -> tuple[bytes, dict[str, str]]:
    """The page, and headers whose CSP allows its own inline script and style only (by
    their hashes): an injected script, were one ever to get in, would not run."""
    page = resources.files("routstr_node.admin").joinpath(name).read_bytes()
    hashes = {
        tag: " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
            for body in re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.S)
        )
        for tag in (b"script", b"style")
    }
    policy = (
        f"default-src 'none'; script-src {hashes[b'script']}; style-src {hashes[b'style']}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return page, headers


async def panel(request: web.Request) -> web.Response:
    page, headers = _panel()
    return web.Response(body=page, content_type="text/html", headers=headers)


async def books_page(request: web.Request) -> web.Response:
    """The books page (contract section 13), a page of its own beside the settings."""
    page, headers = _panel("books.html")
    return web.Response(body=page, content_type="text/html", headers=headers)


async def login(request: web.Request) -> web.Response:
    admin = request.app[ADMIN]
    if not await password_matches(request, await _given_password(request)):
        raise unauthorized("invalid_password", "wrong admin password")
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        admin.sessions.end(old)
    response = web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        SESSION_COOKIE,
        admin.sessions.start(),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_is_https(request),
    )
    return response


async def _given_password(request: web.Request) -> str:
    """`{"password": …}` as JSON, or the field of a plain HTML form (`curl -d` sends JSON
    labelled as a form: a body that starts like JSON is read as JSON)."""
    raw = await admin_body(request)
    password: object = None
    form = request.content_type == "application/x-www-form-urlencoded"
    if form and raw.lstrip()[:1] != b"{":
        password = next(iter(parse_qs(raw.decode(errors="replace")).get("password", [])), None)
    else:
        body = admin_json(raw)
        password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str) or not password:
        raise invalid_request("password_required", "give the admin password", param="password")
    return password


async def logout(request: web.Request) -> web.Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        request.app[ADMIN].sessions.end(session)
    response = web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _is_https(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"
