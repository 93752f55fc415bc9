"""A database URL the node cannot use stops it at start, with a message naming the
database (never its password), and never a half-started node."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from support.postgres import SERVER

ROUTSTR_NODE = Path(sys.executable).parent / "routstr-node"


def _config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = 9\n'
        '[mints]\ntrusted = ["http://127.0.0.1:9"]\n'
        f'[database]\nurl = "{url}"\n'
    )
    return config


async def _run(*argv: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        str(ROUTSTR_NODE),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await child.communicate()
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://postgres@127.0.0.1:1/ledger", "postgresql://postgres@127.0.0.1:1/ledger"),
        (f"{SERVER}/routstr_no_such_database", f"{SERVER}/routstr_no_such_database"),
        (
            "postgresql://postgres:hunter2@127.0.0.1:1/ledger",
            "postgresql://postgres:***@127.0.0.1:1/ledger",
        ),
    ],
    ids=["unreachable", "no-such-database", "password-hidden"],
)
async def test_a_database_the_node_cannot_open_stops_it_at_start(
    tmp_path: Path, url: str, named: str
) -> None:
    code, _, err = await _run("run", "--config", str(_config(tmp_path, url)))
    assert code != 0
    assert f"cannot open the database {named}" in err, err[-2000:]
    assert "hunter2" not in err
    assert "Traceback" not in err

    code, out, err = await _run("audit", "--config", str(_config(tmp_path, url)))
    assert (code, out) == (2, "")
    assert f"cannot open the database {named}" in err, err[-2000:]
    assert "hunter2" not in err
