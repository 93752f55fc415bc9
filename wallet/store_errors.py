"""What a store says when its database cannot be used."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from wallet.errors import StoreUnavailable

__all__ = ["StoreUnavailable", "redacted"]


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
