"""A real node on loopback for tests: its own data dir, the session's mint and upstream."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from routstr_node.config import Settings, load_settings
from routstr_node.server import serve

MODEL = "test-model"  # priced in sat: 1 sat per input token, 2 sat per output token
USD_MODEL = "usd-model"  # priced in USD at btc_usd = 100000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_toml(
    data_dir: Path,
    port: int,
    mint_urls: list[str],
    upstream_url: str,
    extra: str = "",
    *,
    upstream_timeout_s: float = 5,
    node_extra: str = "",
    name: str = "Test Node",
    mint_timeout_s: float | None = None,
) -> str:
    trusted = ", ".join(f'"{u}"' for u in mint_urls)
    mint_timeout = f"timeout_s = {mint_timeout_s}" if mint_timeout_s is not None else ""
    return f"""
[node]
name = "{name}"
data_dir = "{data_dir}"
port = {port}
{node_extra}
[mints]
trusted = [{trusted}]
{mint_timeout}
[pricing]
btc_usd = 100000
[[upstreams]]
name = "fake"
base_url = "{upstream_url}"
api_key = "sk-upstream-secret"
timeout_s = {upstream_timeout_s}
[[models]]
id = "{MODEL}"
upstream = "fake"
upstream_model = "fake-upstream-model"
input_sat_per_1m = 1000000
output_sat_per_1m = 2000000
context_length = 4000
max_output_tokens = 50
[[models]]
id = "{USD_MODEL}"
upstream = "fake"
input_usd_per_1m = 0.15
output_usd_per_1m = 0.60
context_length = 128000
max_output_tokens = 1000
{extra}
"""


@dataclass
class RunningNode:
    url: str  # http://127.0.0.1:PORT
    base_url: str  # …/v1, for the OpenAI SDK
    settings: Settings
    config_path: Path
    data_dir: Path


@asynccontextmanager
async def run_node(
    directory: Path,
    mint_urls: list[str],
    upstream_url: str,
    *,
    extra_toml: str = "",
    upstream_timeout_s: float = 5,
    node_extra: str = "",
    name: str = "Test Node",
    mint_timeout_s: float | None = None,
) -> AsyncIterator[RunningNode]:
    """Serve a node until the block ends (a clean stop, as on SIGTERM)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = directory / "node.toml"
    data_dir = directory / "data"
    config.write_text(
        node_toml(
            data_dir,
            port,
            mint_urls,
            upstream_url,
            extra_toml,
            upstream_timeout_s=upstream_timeout_s,
            node_extra=node_extra,
            name=name,
            mint_timeout_s=mint_timeout_s,
        )
    )
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
