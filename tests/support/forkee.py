"""A stand-in for `counterpoint.infra.cli` in the fork server's children (tests/unit/
test_forkserver.py): `main(argv)` does what argv says, so a test can watch exits and signals."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    from counterpoint.infra.lifeline import follow_supervisor

    follow_supervisor(grace_s=2.0)  # as cli.main does
    command, *rest = argv
    if command == "agent":  # as the supervisor asks: `agent NAME`
        command, *rest = rest
    print(f"forkee {' '.join(argv)} pid {os.getpid()} argv {sys.argv}", flush=True)
    if command == "exit":
        return int(rest[0])
    if command == "quit":  # SystemExit(None): code 0, as in any process
        sys.exit()
    if command == "raise":
        raise RuntimeError("forkee failed on purpose")
    if command == "wait":  # until SIGTERM, which it answers with exit code 7
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
        time.sleep(600)
    return 0
