"""The admin key of this machine: what lets ``routstr-node earnings withdraw`` ask the
running node to pay, instead of paying beside it.

A second process must not pay out of custody while the node runs: the node hands out
NUT-13 output counters from memory, and the same counter used by two processes makes
the same outputs twice. So the command asks the node itself, with a key the node writes
at start into data_dir (readable only by its owner, like the wallet seed beside it) and
deletes at its stop; it opens /admin/api/* like a session does.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "admin-cli.key"


def write_local_key(data_dir: Path) -> str:
    key = secrets.token_urlsafe(32)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key)
    return key


def read_local_key(data_dir: Path) -> str | None:
    try:
        return (data_dir / KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def remove_local_key(data_dir: Path, key: str) -> None:
    """Only this node's own key: another node's on the same data_dir is left alone."""
    if read_local_key(data_dir) == key:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / KEY_FILE).unlink()


def matches(given: str, key: str | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.encode())
