"""Child processes of a benchmark: stopped politely, then for good."""

from __future__ import annotations

import subprocess

# How long a child gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 30


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every child still running, wait for each, SIGKILL the ones that do not stop in time."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
