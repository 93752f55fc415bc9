"""``routstr-node run --workers N``: N serving processes on one port, one node.

The processes share everything through the PostgreSQL database (accounts, custody,
settings, leases), so any of them may answer any request; the kernel spreads the
connections over them (SO_REUSEPORT). This process only supervises: it starts them,
starts again one that died, and passes a stop on to all of them.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

RESTART_AFTER_S = 1.0
_POLL_S = 0.2


def worker_command(config: Path, host: str | None, port: int | None) -> list[str]:
    """How one serving process is started: ``run`` on the shared port."""
    command = [
        sys.executable,
        "-c",
        "from routstr_node.cli import main; main()",
        "run",
        "--config",
        str(config),
        "--reuse-port",
    ]
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return command


def supervise(count: int, command: list[str]) -> int:
    """Run ``count`` copies of ``command`` until SIGTERM or SIGINT, then stop them all
    (each finishes its requests in flight); a copy that dies meanwhile is started again."""
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        children.extend(subprocess.Popen(command) for _ in range(count))
        log.info("serving with %d worker processes: %s", count, [c.pid for c in children])
        while not stopping:
            time.sleep(_POLL_S)
            for i, child in enumerate(children):
                code = child.poll()
                if code is None or stopping:
                    continue
                log.warning("worker %s exited with %s; starting another", child.pid, code)
                time.sleep(RESTART_AFTER_S)
                if not stopping:
                    children[i] = subprocess.Popen(command)
        for child in children:
            child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
