"""The demo node's configuration, and the node.toml it writes for the operator's commands."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from routstr_node.demo.media_tour import MEDIA_MODELS

LOOPBACK = "127.0.0.1"
MODEL = "gpt-4o-mini"


def demo_config(data_dir: Path, port: int, mint_url: str, upstream_url: str) -> dict[str, Any]:
    """A node trusting the local mint, selling sat-priced models of the demo upstream: two
    chat models and one of each media category."""
    return {
        "node": {
            "name": "routstr-node demo",
            "description": "A local demo: test mint, stand-in AI provider, fake sats",
            "host": LOOPBACK,
            "port": port,
            "data_dir": str(data_dir),
        },
        "mints": {"trusted": [mint_url]},
        "pricing": {"btc_usd": 100_000, "price_sources": []},
        "upstreams": [{"name": "demo", "base_url": upstream_url, "api_key": "sk-demo"}],
        "models": [
            {
                "id": MODEL,
                "upstream": "demo",
                "input_sat_per_1m": 50_000,
                "output_sat_per_1m": 200_000,
                "request_sat": 1,
                "context_length": 16_384,
                "max_output_tokens": 1_024,
            },
            {
                "id": "gpt-4o",
                "upstream": "demo",
                "input_sat_per_1m": 250_000,
                "output_sat_per_1m": 1_000_000,
                "request_sat": 2,
                "context_length": 16_384,
                "max_output_tokens": 1_024,
            },
            *MEDIA_MODELS,
        ],
        "limits": {"requests_per_minute": 600, "requests_per_hour": 10_000},
        # a fresh one per demo, shown with the panel's address (the sats are not real)
        "admin": {"password": secrets.token_urlsafe(12)},
    }


def config_toml(config: dict[str, Any]) -> str:
    """``config`` as node.toml: its sections as tables, its lists of tables as arrays."""
    lines: list[str] = []
    for section, value in config.items():
        tables = [value] if isinstance(value, dict) else value
        for table in tables:
            lines.append(f"[{section}]" if isinstance(value, dict) else f"[[{section}]]")
            lines += [f"{key} = {_toml_value(item)}" for key, item in table.items()]
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML form for {type(value).__name__}")
