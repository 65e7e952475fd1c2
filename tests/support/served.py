"""A service the tests start as its own process and talk to over HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

# Generous: on a loaded 2-core machine importing the gateway alone has taken 30 s.
START_TIMEOUT_S = 90.0


class Served:
    """Starts `command` with its output in `log` and waits until `ready()` says it serves."""

    def __init__(self, what: str, command: list[str], log: Path, ready: Callable[[], bool],
                 env: dict[str, str] | None = None) -> None:
        self.what = what
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{what} exited\n{log.read_text()}"
            try:
                if ready():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{what} did not come up in {START_TIMEOUT_S:.0f}s\n"
                             + log.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
