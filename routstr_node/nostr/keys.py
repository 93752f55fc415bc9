"""The node's Nostr key for the settings in force: read again only when the settings
that name it (data_dir, nsec) change, never logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from routstr_node.config import Settings
from routstr_node.identity import load_secret, public_key_hex


@dataclass(frozen=True)
class NodeKey:
    secret: bytes = field(repr=False)
    pubkey: str


class KeyCache:
    def __init__(self, shared: bytes | None = None) -> None:
        self._shared = shared  # the generated key a shared store keeps for every process
        self._for: tuple[Path, str | None] | None = None
        self._key: NodeKey | None = None

    def key(self, settings: Settings) -> NodeKey:
        names = (settings.node.data_dir, settings.nostr.nsec)
        if self._key is None or self._for != names:
            secret = load_secret(*names, self._shared)
            self._key, self._for = NodeKey(secret, public_key_hex(secret)), names
        return self._key
