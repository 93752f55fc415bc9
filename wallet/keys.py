"""API keys: random, shown once, stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from mints.token import Token

API_KEY_PREFIX = "sk-"
ADMIN_KEY_PREFIX = "radmin_"
# how long what made a new account (its token, or its invoice's secret) can get it new
# keys, as long as nothing has happened on it: the keys exist only in one answer, and a
# retry after that answer was lost comes within minutes
KEYS_REISSUE_WINDOW_S = 600


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_hex(32)


def new_admin_key() -> str:
    return ADMIN_KEY_PREFIX + secrets.token_hex(32)


def key_hash(key: str) -> str:
    """Keys carry 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).hexdigest()


def token_account_keys(seed: bytes, token: Token) -> tuple[str, str]:
    """The keys of the account a token creates: derived from the token itself (its
    secrets and signatures, which only its holder has) and the node's seed (which only
    the node has), so the same token asked again gets the same keys, and nobody else
    can compute them. The node still stores only their hashes."""
    key = hmac.digest(seed, b"routstr-node account keys", "sha256")
    digest = hmac.digest(key, token.signed_id.encode(), "sha512")
    return API_KEY_PREFIX + digest[:32].hex(), ADMIN_KEY_PREFIX + digest[32:].hex()
