"""What a store says when its database cannot be used."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class StoreUnavailable(Exception):
    """The database cannot be opened or reached: a message for the operator naming it."""


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
