"""The admin password: compared in constant time, stored only as a scrypt hash."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets

# scrypt's interactive-login cost (RFC 7914): ~16 MiB and tens of ms per guess
_N, _R, _P, _LEN = 2**14, 8, 1, 32


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


async def hash_off_loop(password: str) -> str:
    """``hash_password`` in a thread: scrypt takes tens of ms, the event loop none."""
    return await asyncio.to_thread(hash_password, password)


def verify_password(password: str, stored: str) -> bool:
    try:
        name, n, r, p, salt, digest = stored.split("$")
        expected = bytes.fromhex(digest)
        if name != "scrypt":
            return False
        actual = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=_LEN,
        maxmem=128 * r * (n + p + 2),
    )


def generate_password() -> str:
    return secrets.token_urlsafe(18)


class AdminPassword:
    """What a login is checked against: the configured password, or a stored hash.

    A configured password (node.toml or its variable) is in the operator's hands
    already; one generated or set in the panel exists only as its hash. The legacy
    cookie sends the password with every request, so the last one that matched a
    hash is remembered (as a SHA-256) instead of running scrypt each time.
    """

    def __init__(self, *, plain: str | None = None, hashed: str | None = None) -> None:
        if (plain is None) == (hashed is None):
            raise ValueError("exactly one of plain and hashed")
        self._plain = plain
        self._hashed = hashed
        self._matched: bytes | None = None

    async def matches(self, candidate: str) -> bool:
        if self._plain is not None:
            given, plain = (p.encode("utf-8", "surrogatepass") for p in (candidate, self._plain))
            return hmac.compare_digest(given, plain)
        assert self._hashed is not None
        seen = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        if self._matched is not None and hmac.compare_digest(seen, self._matched):
            return True
        if not await asyncio.to_thread(verify_password, candidate, self._hashed):
            return False
        self._matched = seen
        return True
