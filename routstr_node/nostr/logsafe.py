"""What of a relay URL or a failure goes into a log: never credentials a URL may carry."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from routstr_node.nostr.relay_client import RelayError


def relay_name(url: str) -> str:
    """``wss://host:port/path``, without user info or query (a relay's access token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def failure(exc: BaseException) -> str:
    """A short reason: the relay's own words, or the kind of network failure."""
    if isinstance(exc, RelayError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"websocket handshake refused ({exc.status})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({type(exc.os_error).__name__})"
    return type(exc).__name__
