"""Children die with their supervisor, whatever signal it got.

`counterpoint up` (the demo and the test stacks too) starts each agent and the embedded broker
in a session of its own, so Ctrl-C reaches only the supervisor, which stops them in order. When
the supervisor itself dies without stopping them (SIGKILL, the OOM killer, a crash), they must
not live on, holding partitions and the broker's port. Two mechanisms, because our own Python
processes can watch for that themselves and a foreign binary cannot:

- An agent process follows its supervisor (`follow_supervisor`, called at start-up when the
  supervisor named itself in COUNTERPOINT_SUPERVISOR_PID): on Linux it asks the kernel for
  SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), and on every platform a watchdog
  thread notices the parent is gone (getppid changes when the orphan is re-parented). Either
  way the agent stops as on SIGTERM, committing what it finished, and the watchdog ends the
  process if it is still there `ORPHAN_GRACE_S` later.
- A foreign binary (the broker) starts through `guarded(argv)`, i.e. `python -m
  counterpoint.infra.lifeline PID -- argv...`. On Linux that sets SIGKILL as the parent-death
  signal and execs the binary, which keeps it; elsewhere (macOS) it stays as the binary's
  parent, passes SIGTERM and SIGINT on, and stops the binary once PID is gone.

The kernel's parent is the *thread* that started the child: start children from a thread that
lives as long as the supervisor (the main thread; `up` and the tests do).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "COUNTERPOINT_SUPERVISOR_PID"
# An orphaned agent's graceful stop gets this long (its in-flight work has 10 s to finish).
ORPHAN_GRACE_S = 15.0
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def supervised_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that is to follow this process (see `follow_supervisor`)."""
    return {**env, SUPERVISOR_ENV: str(os.getpid())}


def follow_supervisor(*, grace_s: float = ORPHAN_GRACE_S, kernel: bool = True) -> None:
    """Stop this process when the supervisor that started it dies (no-op when none did).

    `kernel=False` leaves the watchdog alone, as on platforms without prctl."""
    named = os.environ.pop(SUPERVISOR_ENV, "")  # not inherited by anything this process starts
    if not named.isdigit():
        return
    supervisor = int(named)
    if kernel:
        set_parent_death_signal(signal.SIGTERM)
    # Started after prctl, so a supervisor that died in between is seen by the first check.
    threading.Thread(target=_watch, args=(supervisor, grace_s), name="lifeline",
                     daemon=True).start()


def _watch(supervisor: int, grace_s: float) -> None:
    while os.getppid() == supervisor:
        time.sleep(POLL_S)
    log.warning("supervisor pid %d is gone; stopping (at most %.0f s)", supervisor, grace_s)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    log.error("still running %.0f s after the supervisor went; exiting now", grace_s)
    logging.shutdown()
    os._exit(1)


def guarded(argv: Sequence[str]) -> list[str]:
    """`argv` as a command that dies with this process (see the module docstring)."""
    return [sys.executable, "-m", "counterpoint.infra.lifeline", str(os.getpid()), "--", *argv]


def _stand_guard(parent: int, argv: Sequence[str], grace_s: float = 5.0) -> int:
    """Run argv as our child until it exits, or stop it once `parent` is gone."""
    child = subprocess.Popen(list(argv))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda received, _frame: child.send_signal(received))
    while child.poll() is None:
        if os.getppid() != parent:
            child.terminate()
            try:
                child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=POLL_S)
    return child.wait()


def main(args: Sequence[str]) -> int:
    """`python -m counterpoint.infra.lifeline [--watch] PARENT_PID -- COMMAND...`

    `--watch` stands guard even where the kernel could do it, as on macOS."""
    watch = args[:1] == ["--watch"]
    args = args[1:] if watch else args
    if len(args) < 3 or not args[0].isdigit() or args[1] != "--":
        print("usage: python -m counterpoint.infra.lifeline [--watch] PARENT_PID -- COMMAND...",
              file=sys.stderr)
        return 2
    parent, argv = int(args[0]), list(args[2:])
    if not watch and set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:
            return 1  # the parent died before the signal was set: do not start at all
        os.execvp(argv[0], argv)  # the parent-death signal survives exec
    if os.getppid() != parent:
        return 1
    return _stand_guard(parent, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
