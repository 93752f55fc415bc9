"""Routstr's NIP-91 provider announcement (``kind:38421``): what this node says about
itself, and what is read back from the announcements of other nodes.

Tags: ``d`` (the node's pubkey hex: one announcement per key, replaced on change),
one ``u`` per URL, one ``mint`` per trusted mint, ``version``. Content: JSON
``{"name", "about"}``. The event is parameterized-replaceable, so relays keep only the
newest per (pubkey, d).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import bech32

import routstr_node
from routstr_node.config import Settings
from routstr_node.nostr.event import Event, Tags

KIND = 38421
DELETION = 5  # NIP-09 deletion request: how an announcement is withdrawn
WITHDRAWN = "node no longer announced"
# larger announcements are not read at all: content, and all tags together
MAX_CONTENT_BYTES = 64 * 1024
MAX_TAGS_CHARS = 64 * 1024
MAX_D_CHARS = 256
# what is kept of one node, whatever it claims: a full directory stays a few MB
_MAX_URLS = 8  # per list
_MAX_URL_CHARS = 512
_MAX_NAME_CHARS = 256
_MAX_ABOUT_CHARS = 1024
_MAX_VERSION_CHARS = 64


def announcement(settings: Settings, pubkey: str) -> tuple[Tags, str]:
    """Tags and content of this node's announcement under ``settings``.

    Needs ``settings.node.public_url`` (the caller checks): a node nobody can reach is
    not announced.
    """
    tags: list[tuple[str, ...]] = [("d", pubkey), ("u", settings.node.public_url)]
    tags += [("mint", url) for url in settings.mints.trusted]
    tags.append(("version", routstr_node.__version__))
    content = json.dumps(
        {"name": settings.node.name, "about": settings.node.description},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return tuple(tags), content


def address(pubkey: str, d: str) -> str:
    """NIP-01's address of a replaceable announcement: ``38421:<pubkey>:<d>``."""
    return f"{KIND}:{pubkey}:{d}"


def withdrawal(pubkey: str, d: str, event_ids: tuple[str, ...], *, by_address: bool) -> Tags:
    """Tags of the deletion request for announcements: by id (what every relay reads)
    and, when the node is announced nowhere any more, by address (NIP-09: every version
    up to the request's date, on every relay that honours it)."""
    by_id = tuple(("e", event_id) for event_id in event_ids)
    at = (("a", address(pubkey, d)),) if by_address else ()
    return (*by_id, *at, ("k", str(KIND)))


def npub_of(pubkey: str) -> str:
    """The bech32 ``npub1…`` form of a 64-hex public key."""
    words = bech32.convertbits(bytes.fromhex(pubkey), 8, 5)
    assert words is not None
    return str(bech32.bech32_encode("npub", words))


def d_tag(event: Event) -> str:
    """The event's ``d`` value (NIP-01: no tag and an empty one are the same)."""
    values = event.tag_values("d")
    return values[0] if values else ""


@dataclass(frozen=True)
class NodeListing:
    """Another node as its newest announcement describes it."""

    pubkey: str
    d: str
    name: str
    about: str
    urls: tuple[str, ...]
    mints: tuple[str, ...]
    version: str | None
    announced_at: int
    event_id: str

    def to_json(self, *, own: bool) -> dict[str, Any]:
        return {
            "pubkey": self.pubkey,
            "npub": npub_of(self.pubkey),
            "name": self.name,
            "about": self.about,
            "urls": list(self.urls),
            "mints": list(self.mints),
            "version": self.version,
            "announced_at": self.announced_at,
            "self": own,
        }


def _web_urls(values: list[str]) -> tuple[str, ...]:
    """Only http(s) URLs, each once: a listing never carries a javascript: link."""
    kept: list[str] = []
    for value in values:
        if len(value) > _MAX_URL_CHARS or value in kept or not value.isascii():
            continue  # a URL is ASCII (an IDN host in its xn-- form)
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            continue
        if parts.scheme in ("http", "https") and parts.netloc:
            kept.append(value)
        if len(kept) == _MAX_URLS:
            break
    return tuple(kept)


def _text(value: object, most: int) -> str:
    """Text to show as it came, cut short, with anything that is not UTF-8 (a lone
    surrogate from a JSON escape) replaced: the listing must always encode."""
    if not isinstance(value, str):
        return ""
    return value[:most].encode("utf-8", "replace").decode("utf-8")


def oversized(event: Event) -> bool:
    """Too large to be read: the directory ignores it (and never verifies it)."""
    return (
        len(event.content.encode("utf-8", "surrogatepass")) > MAX_CONTENT_BYTES
        or sum(len(item) for tag in event.tags for item in tag) > MAX_TAGS_CHARS
        or len(d_tag(event)) > MAX_D_CHARS
    )


def listing(event: Event) -> NodeListing:
    """What a (verified) announcement says; unreadable content gives empty name and about."""
    try:
        meta = json.loads(event.content) if event.content else {}
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past Python's depth
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    versions = event.tag_values("version")
    return NodeListing(
        pubkey=event.pubkey,
        d=d_tag(event),
        name=_text(meta.get("name"), _MAX_NAME_CHARS),
        about=_text(meta.get("about"), _MAX_ABOUT_CHARS),
        urls=_web_urls(event.tag_values("u")),
        mints=_web_urls(event.tag_values("mint")),
        version=_text(versions[0], _MAX_VERSION_CHARS) if versions else None,
        announced_at=event.created_at,
        event_id=event.id,
    )
