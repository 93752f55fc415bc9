"""Test-only fault points: kill the process at a named step to prove crash recovery.

Inert unless ROUTSTR_TEST_FAULT names the step; then the process dies there at once
(SIGKILL: no cleanup, no flush), as a power cut would.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = os.environ.get("ROUTSTR_TEST_FAULT", "")


def fault_point(name: str) -> None:
    if _ACTIVE and name == _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
