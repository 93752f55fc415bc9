"""A node on loopback with a public URL and a [nostr] section, for the Nostr tests.

``support.node.run_node`` writes ``[node]`` itself, and ``public_url`` belongs there:
this writes the same node.toml with that line added.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from routstr_node.config import load_settings
from routstr_node.server import serve
from support.node import RunningNode, node_toml
from support.relay import free_port

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
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "node.toml"
    data_dir = directory / "data"
    text = node_toml(data_dir, port, mint_urls, upstream_url, nostr_toml(relays, announce=announce))
    node_section = f'[node]\npublic_url = "{public_url}"\n'
    text = text.replace("[node]\n", node_section, 1).replace('"Test Node"', f'"{name}"', 1)
    config.write_text(text)
    settings = load_settings(config)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, config_path=config, ready=ready, stop=stop))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise RuntimeError("the node stopped during start-up")
    url = f"http://127.0.0.1:{port}"
    try:
        yield RunningNode(url, url + "/v1", settings, config, data_dir)
    finally:
        stop.set()
        await task


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
