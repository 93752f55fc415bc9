"""Who is signed in to the admin panel: a session cookie, or the legacy password cookie.

Every password guess, at the login or in the legacy cookie, passes one brake.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote

from aiohttp import hdrs, web

from routstr_node.admin.local_key import matches
from routstr_node.admin.state import ADMIN
from routstr_node.errors import ApiError, unauthorized

log = logging.getLogger(__name__)

SESSION_COOKIE = "admin_session"
LEGACY_COOKIE = "admin_password"


def admin_required() -> ApiError:
    return unauthorized("admin_required", "sign in to the admin panel first (POST /admin/login)")


async def signed_in(request: web.Request) -> bool:
    admin = request.app[ADMIN]
    session = request.cookies.get(SESSION_COOKIE)
    if session and (admin.sessions.valid(session) or matches(session, admin.local_key)):
        return True
    legacy = _legacy_password(request)
    if not legacy:
        return False
    return await password_matches(request, legacy)


def _legacy_password(request: web.Request) -> str | None:
    """The legacy cookie's password, as the operator typed it.

    Browsers and curl send a value with spaces as it is (``document.cookie`` allows it),
    and Python's cookie parser stops at the first space: the raw header is read instead.
    A quoted value follows the parser's rules; %-escapes are decoded either way.
    """
    for header in request.headers.getall(hdrs.COOKIE, ()):
        for piece in header.split(";"):
            name, equals, value = piece.strip().partition("=")
            if not equals or name != LEGACY_COOKIE:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = request.cookies.get(LEGACY_COOKIE, "")
            return unquote(value)
    return None


async def password_matches(request: web.Request, password: str) -> bool:
    """Every guess, at the login or in the legacy cookie, passes the same brake: held
    for a short wait, refused with 429 for a longer one."""
    admin = request.app[ADMIN]
    address = request.remote or "unknown"
    hold_s = admin.throttle.turn(address)
    if hold_s is None:
        wait_s = admin.throttle.wait_s(address)
        raise ApiError(
            429,
            "rate_limit_error",
            "rate_limited",
            f"too many wrong admin passwords; try again in {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    if hold_s:
        await asyncio.sleep(hold_s)
    current = admin.password
    if not await current.matches(password) or admin.password is not current:
        # wrong, or right only for a password changed while it was being checked
        log.warning("admin password refused (from %s)", address)
        return False
    admin.throttle.succeeded(address)
    return True
