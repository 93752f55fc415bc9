"""`GET`/`PATCH /admin/api/settings`, and the changes made there applied at start."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from aiohttp import web

from routstr_node.admin.json_body import admin_body, admin_json
from routstr_node.admin.password import AdminPassword, hash_off_loop
from routstr_node.admin.signin import SESSION_COOKIE, admin_required, signed_in
from routstr_node.admin.state import ADMIN, AdminState
from routstr_node.config import REDACTED, ConfigError, Settings, json_default
from routstr_node.config.patch import exact_default, kept_patch, merge_patch
from routstr_node.errors import invalid_request
from routstr_node.identity import load_secret
from routstr_node.state import NODE

log = logging.getLogger(__name__)

# where the node listens and keeps its money are fixed while it runs
_FIXED_WHILE_RUNNING = ("host", "port", "data_dir")
_LOGS_FIXED_WHILE_RUNNING = ("usage_records", "access_log")


def settings_view(settings: Settings) -> dict[str, Any]:
    """The settings in node.toml's shape, secrets shown as "[REDACTED]". The admin
    password always exists (generated when none is configured)."""
    view = settings.redacted()
    view["admin"]["password"] = REDACTED
    return view


def _answer(settings: Settings) -> web.Response:
    return web.Response(
        body=json.dumps(settings_view(settings), default=json_default).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def get_settings(request: web.Request) -> web.Response:
    return _answer(request.app[NODE].settings)


async def patch_settings(request: web.Request) -> web.Response:
    patch = admin_json(await admin_body(request))
    node = request.app[NODE]
    admin = request.app[ADMIN]
    async with admin.changing:
        # asked again once it is this request's turn: a change that ended sessions (a new
        # password) may have gone first
        if not await signed_in(request):
            raise admin_required()
        try:
            kept = kept_patch(
                patch, node.settings.to_dict(), admin.file_settings.to_dict(), os.environ
            )
            new_password = _new_password(kept)
            overrides = merge_patch(admin.overrides, kept)
            new = admin.file_settings.merged(overrides)
            _check_runnable(node.settings, new)
        except ConfigError as exc:
            raise invalid_request("invalid_setting", exc.message, param=exc.param) from None
        password_hash = None if new_password is None else await hash_off_loop(new_password)
        await node.wallet.settings.save(json.dumps(overrides, default=exact_default), password_hash)
        admin.overrides = overrides
        await _run_on(request.app, new)
        if password_hash is not None:
            admin.password = AdminPassword(hashed=password_hash)
            admin.password_hash = password_hash
            admin.sessions.end_all_but(request.cookies.get(SESSION_COOKIE))
    log.info("settings changed in the admin panel: %s", ", ".join(sorted(kept)) or "nothing")
    return _answer(new)


def _new_password(kept: dict[str, Any]) -> str | None:
    """A password set in the panel is kept only as its hash, never among the overrides."""
    table = kept.get("admin")
    if not isinstance(table, dict) or "password" not in table:
        return None
    password = table.pop("password")
    if not isinstance(password, str) or not password:
        raise ConfigError(
            "admin.password: the admin password can be changed, not removed", "admin.password"
        )
    return password


def _check_runnable(running: Settings, new: Settings) -> None:
    for key in _FIXED_WHILE_RUNNING:
        if getattr(new.node, key) != getattr(running.node, key):
            param = f"node.{key}"
            raise ConfigError(
                f"{param}: cannot change while the node runs; change it in node.toml", param
            )
    for key in _LOGS_FIXED_WHILE_RUNNING:  # opened at start (a file, a writer)
        if getattr(new.logs, key) != getattr(running.logs, key):
            param = f"logs.{key}"
            raise ConfigError(
                f"{param}: cannot change while the node runs; change it in node.toml", param
            )
    if new.database.url != running.database.url:  # where the ledger (and these settings) live
        raise ConfigError(
            "database.url: cannot change while the node runs; change it in node.toml (and"
            " move the ledger with routstr-node migrate)",
            "database.url",
        )
    if new.nostr.nsec != running.nostr.nsec:
        try:
            load_secret(new.node.data_dir, new.nostr.nsec)
        except ValueError as exc:
            raise ConfigError(f"nostr.nsec: {exc}", "nostr.nsec") from None


async def _run_on(app: web.Application, new: Settings) -> None:
    await app[NODE].apply(new)
    # aiohttp reads the application's body limit for each new request
    app._client_max_size = new.limits.max_body_bytes


FOLLOW_EVERY_S = 2.0  # how often a process of a shared node reads the stored settings


async def follow_stored(app: web.Application) -> None:
    """Several processes on one database: apply what another process's admin changed
    (the settings and the password), read every FOLLOW_EVERY_S, so a change reaches every
    process within a few seconds."""
    while True:
        await asyncio.sleep(FOLLOW_EVERY_S)
        try:
            await _follow_once(app)
        except Exception as exc:  # the next round reads again
            log.warning("reading the stored settings failed: %s", type(exc).__name__)


async def _follow_once(app: web.Application) -> None:
    node, admin = app[NODE], app[ADMIN]
    stored = await node.wallet.settings.load()
    overrides = json.loads(stored.overrides)
    async with admin.changing:
        if stored.admin_password_hash and stored.admin_password_hash != admin.password_hash:
            admin.password = AdminPassword(hashed=stored.admin_password_hash)
            admin.password_hash = stored.admin_password_hash
        if overrides == admin.overrides:
            return
        admin.overrides = overrides
        if overrides:
            await restore_at_start(app, admin)
        else:
            await _run_on(app, admin.file_settings)
        log.info("settings changed by another process of this node: applied")


async def restore_at_start(app: web.Application, admin: AdminState) -> None:
    """Apply what was changed in the admin panel before this start.

    A section that no longer fits node.toml (an upstream renamed there, a key this
    version does not know) is logged and left out; the next change made in the panel
    stores the rest without it.
    """
    if not admin.overrides:
        return
    node = app[NODE]
    kept: dict[str, Any] = {}
    sections = sorted(admin.overrides, key=_rank)
    for section in sections:
        candidate = {**kept, section: admin.overrides[section]}
        try:
            # the rules a change met when it was made, met again against node.toml as it
            # is now: a key variable or kept key that node.toml moved is not followed
            file = admin.file_settings.to_dict()
            kept_patch({section: admin.overrides[section]}, file, file, os.environ)
            _check_runnable(node.settings, admin.file_settings.merged(candidate))
        except ConfigError as exc:
            log.error(
                "a change made in the admin panel no longer fits node.toml (%s): left out",
                exc.message,
            )
            continue
        kept = candidate
    admin.overrides = kept
    if kept:
        await _run_on(app, admin.file_settings.merged(kept))


# dependencies first: models name upstreams
_SECTION_ORDER = (
    "node",
    "mints",
    "pricing",
    "upstreams",
    "models",
    "admin",
    "limits",
    "logs",
    "sessions",
    "database",
    "nostr",
    "payout",
)


def _rank(section: str) -> int:
    return _SECTION_ORDER.index(section) if section in _SECTION_ORDER else len(_SECTION_ORDER)
