"""The node's Nostr identity: from the configured nsec, else generated once: in data_dir,
or in the database when several processes share it (each with a data_dir of its own)."""

from __future__ import annotations

import os
from pathlib import Path

import bech32
import secp256k1

from mints.curve import CurveError, scalar

KEY_FILE = "nostr.key"


def _bech32(prefix: str, data: bytes) -> str:
    words = bech32.convertbits(data, 8, 5)
    assert words is not None
    return str(bech32.bech32_encode(prefix, words))


def secret_from_nsec(nsec: str) -> bytes:
    """The 32-byte key of an ``nsec1…`` or a 64-hex-character secret (ValueError if neither)."""
    if nsec.startswith("nsec1"):
        prefix, words = bech32.bech32_decode(nsec)
        data = bech32.convertbits(words, 5, 8, False) if words is not None else None
        if prefix != "nsec" or data is None or len(data) != 32:
            raise ValueError("not a valid nsec1… key")
        return _usable(bytes(data))
    try:
        secret = bytes.fromhex(nsec)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise ValueError("must be an nsec1… key or 64 hex characters")
    return _usable(secret)


def _usable(secret: bytes) -> bytes:
    """A secp256k1 secret is a number from 1 to n-1: 32 bytes are not all such."""
    try:
        scalar(int.from_bytes(secret, "big"))
    except CurveError:
        raise ValueError(
            "is not a usable secp256k1 key (zero, or not below the curve order)"
        ) from None
    return secret


def load_secret(data_dir: Path, nsec: str | None, stored: bytes | None = None) -> bytes:
    """The key in force: the configured nsec, else the shared store's generated key
    (``stored``), else the one generated in data_dir."""
    if nsec:
        return secret_from_nsec(nsec)
    if stored is not None:
        return stored
    path = data_dir / KEY_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the seed and the keys live here
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


def key_to_share(data_dir: Path) -> bytes:
    """What this process offers a shared store as the node's key: the one it generated
    before (the node keeps its npub when it moves to PostgreSQL), else a new one. The
    first offer stored wins; nothing is written to data_dir."""
    path = data_dir / KEY_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    return os.urandom(32)


def public_key_hex(secret: bytes) -> str:
    """The x-only public key Nostr uses (BIP-340)."""
    key = secp256k1.PrivateKey(secret, raw=True)
    return str(key.pubkey.serialize(compressed=True)[1:].hex())


def npub(secret: bytes) -> str:
    return _bech32("npub", bytes.fromhex(public_key_hex(secret)))
