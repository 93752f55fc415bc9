"""A node on loopback with a public URL and a [nostr] section, for the Nostr tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from support.e2e import get
from support.node import RunningNode, run_node
from support.nostr_client import hex_of_npub

ADMIN_PASSWORD = "nostr-tests-admin-password"


def nostr_toml(relays: list[str], *, announce: bool) -> str:
    listed = ", ".join(f'"{url}"' for url in relays)
    return (
        f"[nostr]\nrelays = [{listed}]\nannounce = {str(announce).lower()}\n"
        f'[admin]\npassword = "{ADMIN_PASSWORD}"\n'
    )


@asynccontextmanager
async def run_nostr_node(
    directory: Path,
    mint_urls: list[str],
    upstream_url: str,
    *,
    relays: list[str],
    announce: bool,
    public_url: str = "",
    name: str = "Test Node",
) -> AsyncIterator[RunningNode]:
    """Serve a node until the block ends (a clean stop, as on SIGTERM)."""
    async with run_node(
        directory,
        mint_urls,
        upstream_url,
        extra_toml=nostr_toml(relays, announce=announce),
        node_extra=f"public_url = {json.dumps(public_url)}",
        name=name,
    ) as node:
        yield node


async def admin_patch(node: RunningNode, patch: dict[str, Any]) -> dict[str, Any]:
    """Change settings as the admin does (PATCH /admin/api/settings); the new settings."""
    headers = {"Content-Type": "application/json", "Cookie": f"admin_password={ADMIN_PASSWORD}"}
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{node.url}/admin/api/settings", data=json.dumps(patch), headers=headers
        ) as answer,
    ):
        body = await answer.json()
        assert answer.status == 200, body
        return dict(body)


async def node_pubkey(node: RunningNode) -> str:
    """The node's Nostr key (hex), from its npub in GET /v1/info."""
    return hex_of_npub((await get(f"{node.url}/v1/info")).body["npub"])
