"""The session routes: an account lists, reads and deletes its own sessions.

Another account's session is not found (404), as one that never was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from routstr_node.account_api import account_of
from routstr_node.errors import not_found
from routstr_node.sessions.chat import alive_since
from routstr_node.sessions.store import SessionStore
from routstr_node.sessions.stores import session_store_for
from routstr_node.state import NODE

SESSIONS = web.AppKey("sessions", SessionStore)
REMOVE_EXPIRED_EVERY_S = 3600.0
log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_sessions_context)
    app.router.add_get("/v1/sessions", list_sessions)
    app.router.add_get("/v1/sessions/{id}", get_session)
    app.router.add_delete("/v1/sessions/{id}", delete_session)


async def _sessions_context(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    store = session_store_for(node.settings.node.data_dir, node.settings.database.url)
    await store.open()
    app[SESSIONS] = store
    expiry = asyncio.create_task(_remove_expired(app, store), name="expired-sessions")
    try:
        yield
    finally:
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
        await store.close()


async def _remove_expired(app: web.Application, store: SessionStore) -> None:
    """Expired sessions are never read again; their messages leave the disk at start and
    every hour."""
    while True:
        try:
            await store.remove_expired(alive_since(app[NODE].settings.sessions))
        except Exception as exc:
            log.warning("expired sessions not removed now: %s", type(exc).__name__)
        await asyncio.sleep(REMOVE_EXPIRED_EVERY_S)


async def _caller(request: web.Request) -> tuple[int, int, SessionStore]:
    node = request.app[NODE]
    if not node.settings.sessions.enabled:
        raise not_found("not_found", "sessions are not enabled on this node")
    account_id = await account_of(request, node)
    return account_id, alive_since(node.settings.sessions), request.app[SESSIONS]


async def list_sessions(request: web.Request) -> web.Response:
    account_id, since, store = await _caller(request)
    found = await store.sessions(account_id, since)
    return web.json_response(
        {
            "data": [
                {
                    "id": s.id,
                    "created": s.created,
                    "updated": s.updated,
                    "messages": s.messages,
                    "title": s.title,
                }
                for s in found
            ]
        }
    )


async def get_session(request: web.Request) -> web.Response:
    account_id, since, store = await _caller(request)
    session_id = request.match_info["id"]
    if await store.summary(account_id, session_id, since) is None:
        raise not_found("not_found", f"no session '{session_id}'")
    messages = await store.messages(account_id, session_id, since)
    return web.json_response({"id": session_id, "messages": messages})


async def delete_session(request: web.Request) -> web.Response:
    account_id, _, store = await _caller(request)
    session_id = request.match_info["id"]
    if not await store.delete(account_id, session_id):
        raise not_found("not_found", f"no session '{session_id}'")
    return web.json_response({"id": session_id, "deleted": True})
