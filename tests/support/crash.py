"""Crashing a wallet operation for real: a child process runs it and SIGKILLs itself at a
named fault point (tests/support/fault_runner.py, wallet/faults.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

FAULT_RUNNER = Path(__file__).resolve().parents[1] / "support" / "fault_runner.py"


async def crash_at(point: str, data_dir: Path, mint_url: str, *args: str) -> list[dict[str, Any]]:
    """Run the operation in a child that dies at ``point``; the JSON lines it printed."""
    env = {**os.environ, "ROUTSTR_TEST_FAULT": point}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FAULT_RUNNER),
        str(data_dir),
        mint_url,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == -signal.SIGKILL, (child.returncode, out, err.decode()[-2000:])
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert not [line for line in lines if "done" in line], "the operation finished"
    return lines
