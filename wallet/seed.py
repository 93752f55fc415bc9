"""The node's seed: created once in data_dir, the backup every output is derived from."""

from __future__ import annotations

import os
from pathlib import Path

SEED_FILE = "wallet.seed"


def load_or_create_seed(data_dir: Path) -> bytes:
    """Read the 64-byte seed, creating it (mode 0600) on first start."""
    path = data_dir / SEED_FILE
    if path.exists():
        text = path.read_text().strip()
        seed = bytes.fromhex(text)
        if len(seed) != 64:
            raise ValueError(f"{path}: the seed must be 64 bytes of hex")
        return seed
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the seed and the keys live here
    seed = os.urandom(64)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(seed.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return seed
