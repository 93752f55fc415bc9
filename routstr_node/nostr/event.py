"""NIP-01 events: the canonical id, BIP-340 signatures, and checks of received events.

Everything a relay sends is untrusted: ``parse`` accepts only the exact shape NIP-01
defines, ``verify`` recomputes the id and checks the signature against the pubkey.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import secp256k1

from routstr_node.identity import public_key_hex

Tags = tuple[tuple[str, ...], ...]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_MAX_INT = 2**53 - 1  # what every JSON reader keeps exact


@dataclass(frozen=True)
class Event:
    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        """The event as it goes on the wire."""
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(tag) for tag in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[str]:
        """The first value of every tag called ``name``, in order."""
        return [tag[1] for tag in self.tags if len(tag) > 1 and tag[0] == name]


def serialize(pubkey: str, created_at: int, kind: int, tags: Tags, content: str) -> bytes:
    """NIP-01's canonical form: compact JSON, UTF-8, no escaping beyond what JSON needs."""
    data = [0, pubkey, created_at, kind, tags, content]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def event_id(pubkey: str, created_at: int, kind: int, tags: Tags, content: str) -> str:
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


def sign(secret: bytes, *, created_at: int, kind: int, tags: Tags, content: str) -> Event:
    """A complete event signed with ``secret`` (BIP-340 Schnorr over the id)."""
    pubkey = public_key_hex(secret)
    ident = event_id(pubkey, created_at, kind, tags, content)
    sig = schnorr_sign(secret, bytes.fromhex(ident))
    return Event(ident, pubkey, created_at, kind, tags, content, sig)


def schnorr_sign(secret: bytes, message: bytes) -> str:
    """BIP-340 signature (hex) of a 32-byte message.

    The binding passes no auxiliary randomness, which libsecp256k1 takes as 32 zero
    bytes (BIP-340's vector 0 checks this): deterministic nonces, secure by BIP-340,
    only without the extra hardening against side channels that fresh randomness adds.
    """
    key = secp256k1.PrivateKey(secret, raw=True)
    return bytes(key.schnorr_sign(message, None, raw=True)).hex()


def schnorr_valid(pubkey: str, message: bytes, sig: str) -> bool:
    """Whether ``sig`` (128 hex) is ``pubkey``'s (x-only, 64 hex) BIP-340 signature."""
    try:
        key = secp256k1.PublicKey(b"\x02" + bytes.fromhex(pubkey), raw=True)
        return bool(key.schnorr_verify(message, bytes.fromhex(sig), None, raw=True))
    except Exception:  # not a point on the curve: the library says so by raising
        return False


def verify(event: Event) -> bool:
    """The id is the hash of the event's fields and the signature is the pubkey's."""
    expected = event_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    return expected == event.id and schnorr_valid(event.pubkey, bytes.fromhex(expected), event.sig)


def is_hex64(value: object) -> bool:
    """An id or x-only public key as NIP-01 writes them: 64 lowercase hex digits."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def nostr_int(value: object) -> int | None:
    """A timestamp or kind: a non-negative integer in range (a bool is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT:
        return value
    return None


def _tags(value: object) -> Tags | None:
    if not isinstance(value, list):
        return None
    tags: list[tuple[str, ...]] = []
    for tag in value:
        if not isinstance(tag, list) or not all(isinstance(item, str) for item in tag):
            return None
        tags.append(tuple(tag))
    return tuple(tags)


def parse(obj: object) -> Event | None:
    """The event in ``obj`` if it has NIP-01's shape (None otherwise); not yet verified."""
    if not isinstance(obj, dict):
        return None
    ident, pubkey, sig, content = (
        obj.get("id"),
        obj.get("pubkey"),
        obj.get("sig"),
        obj.get("content"),
    )
    created_at, kind, tags = (
        nostr_int(obj.get("created_at")),
        nostr_int(obj.get("kind")),
        _tags(obj.get("tags")),
    )
    if not (
        isinstance(ident, str)
        and is_hex64(ident)
        and isinstance(pubkey, str)
        and is_hex64(pubkey)
        and isinstance(sig, str)
        and _HEX128.fullmatch(sig)
        and isinstance(content, str)
        and created_at is not None
        and kind is not None
        and tags is not None
    ):
        return None
    return Event(ident, pubkey, created_at, kind, tags, content, sig)


def valid_event(obj: object) -> Event | None:
    """``parse`` and ``verify`` in one: an event that is exactly what it claims, or None."""
    event = parse(obj)
    return event if event is not None and verify(event) else None
