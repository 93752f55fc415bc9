"""Where this node's announcement is, kept in ``data_dir/nostr-announced.json`` so that
it can be withdrawn from a relay even after a restart with announcing turned off.

Per relay URL: the key, ``d`` value and the ids of the announcements that relay may
hold (the one it accepted last, and any sent since whose answer has not come: written
down before they are sent, as a payment is, so that an answer lost on the way still
leaves the copy to withdraw); and the date of the newest event the node signed, so that
an announcement made after a restart is still newer than a withdrawal made before it.
The file is written whole (temp file + rename); one that is missing or unreadable
counts as empty: a node that never announced has nothing to withdraw.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from routstr_node.nostr.announcement import d_tag
from routstr_node.nostr.event import Event, is_hex64, nostr_int

log = logging.getLogger(__name__)

FILE = "nostr-announced.json"
MAX_IDS = 8  # per relay: sends still unanswered while it is down add up to this many


@dataclass(frozen=True)
class Announced:
    """The announcements one relay may hold (a relay keeps the newest it accepted)."""

    pubkey: str
    d: str
    event_ids: tuple[str, ...]
    created_at: int


def _entry(value: object) -> Announced | None:
    if not isinstance(value, dict):
        return None
    pubkey, d, event_ids, created_at = (
        value.get(k) for k in ("pubkey", "d", "event_ids", "created_at")
    )
    date = nostr_int(created_at)
    if not (
        isinstance(pubkey, str)
        and is_hex64(pubkey)
        and isinstance(event_ids, list)
        and 0 < len(event_ids) <= MAX_IDS
        and all(is_hex64(i) for i in event_ids)
        and isinstance(d, str)
        and date is not None
    ):
        return None
    return Announced(pubkey, d, tuple(event_ids), date)


class AnnouncedFile:
    """The record in one data dir: read at creation, written after every change."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / FILE
        self.relays: dict[str, Announced] = {}
        self.last_created_at = 0
        self._load()

    def _load(self) -> None:
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("nostr: %s is unreadable (%s); taken as empty", FILE, type(exc).__name__)
            return
        relays = data.get("relays") if isinstance(data, dict) else None
        last = data.get("last_created_at") if isinstance(data, dict) else None
        if not isinstance(relays, dict) or not isinstance(last, int) or isinstance(last, bool):
            log.warning("nostr: %s is not what the node writes; taken as empty", FILE)
            return
        for url, value in relays.items():
            entry = _entry(value)
            if entry is None:
                log.warning("nostr: %s has an unreadable entry; it is dropped", FILE)
                continue
            self.relays[url] = entry
        self.last_created_at = last

    def sending(self, url: str, event: Event) -> None:
        """``event`` is about to be sent to ``url``: from now on it may hold it, beside
        what it held before (the same key and ``d``) until it accepts the new one."""
        known = self.relays.get(url)
        d = d_tag(event)
        before = known.event_ids if known and (known.pubkey, known.d) == (event.pubkey, d) else ()
        ids = tuple(dict.fromkeys((*before, event.id)))[-MAX_IDS:]
        self.relays[url] = Announced(event.pubkey, d, ids, event.created_at)
        self.last_created_at = max(self.last_created_at, event.created_at)
        self._save()

    def accepted(self, url: str, event: Event) -> None:
        """``url`` accepted ``event``: it holds that one (and no older one) now."""
        self.relays[url] = Announced(event.pubkey, d_tag(event), (event.id,), event.created_at)
        self.last_created_at = max(self.last_created_at, event.created_at)
        self._save()

    def withdrawn(self, url: str, deletion: Event | None = None) -> None:
        """``url`` holds nothing of this node (it accepted ``deletion``, or cannot be asked)."""
        self.relays.pop(url, None)
        if deletion is not None:
            self.last_created_at = max(self.last_created_at, deletion.created_at)
        self._save()

    def _save(self) -> None:
        """Write the file whole; a failure is logged (the next change writes it again)."""
        data = {
            "last_created_at": self.last_created_at,
            "relays": {
                url: {**asdict(entry), "event_ids": list(entry.event_ids)}
                for url, entry in self.relays.items()
            },
        }
        temp: str | None = None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.data_dir, prefix=FILE, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            log.warning("nostr: cannot write %s: %s", FILE, type(exc).__name__)
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
