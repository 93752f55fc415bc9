"""What the admin routes share: the password, sessions, and the settings changed here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from routstr_node.admin.password import AdminPassword
from routstr_node.admin.sessions import AdminSessions, LoginThrottle
from routstr_node.config import Settings


@dataclass
class AdminState:
    password: AdminPassword
    # node.toml and its environment, before anything changed in the admin panel
    file_settings: Settings
    # every change made in the panel, merged: what overrides node.toml, also after a restart
    overrides: dict[str, Any]
    sessions: AdminSessions = field(default_factory=AdminSessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    changing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one change at a time
    # the key `routstr-node earnings withdraw` on this machine signs in with (local_key.py)
    local_key: str | None = None
    # the stored password hash this process runs with: another process's change is seen
    password_hash: str | None = None


ADMIN = web.AppKey("admin", AdminState)
