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
import fcntl
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "admin-cli.key"


@dataclass
class LocalKey:
    """The key, and the file it is in, held open with a shared lock while the node runs:
    the lock (gone with the process, also when it is killed) tells the command whether a
    node runs on this data_dir."""

    key: str
    fd: int


def write_local_key(data_dir: Path) -> LocalKey:
    key = secrets.token_urlsafe(32)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key.encode())
    fcntl.flock(fd, fcntl.LOCK_SH)
    return LocalKey(key, fd)


def read_local_key(data_dir: Path) -> str | None:
    try:
        return (data_dir / KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def node_runs(data_dir: Path) -> bool:
    """Whether a node holds this data_dir's key file (its lock) now."""
    try:
        fd = os.open(data_dir / KEY_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def remove_local_key(data_dir: Path, local: LocalKey) -> None:
    """Only this node's own key: another node's on the same data_dir is left alone."""
    if read_local_key(data_dir) == local.key:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / KEY_FILE).unlink()
    os.close(local.fd)


def matches(given: str, key: str | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.encode())
