"""Agent processes forked from one warm interpreter, so `up` pays for Python's imports once.

Each `counterpoint agent NAME` process spends most of its start-up CPU importing the same
modules (about 0.45 s of its 0.8 s here); ten of them on two cores were most of `up`'s
start-up. The fork server is one process that imports those modules, then forks a child per
agent on request. A child is an agent process like one started from the command line:
- it runs `counterpoint agent NAME ...` (`cli.main`) in a session of its own, its output
  appended to its log;
- its command line (/proc/PID/cmdline, what `ps` and `counterpoint status` read) is that
  command's, NUL-separated as if it had been exec'd; its environment (/proc/PID/environ) is
  the one the supervisor gave the fork server, which is the agents' environment;
- it follows the fork server as an exec'd agent follows `up` (infra/lifeline.py), and the fork
  server follows `up`: it exits when `up` closes its request pipe or dies, and its children
  then stop gracefully.

The server never starts a thread, an event loop or a connection before it forks: a child
starts clean. The multiprocessing module's fork server was the other choice; its children run
a pickled target under its own bootstrap with the server's command line and inherited
descriptors, and report exits only to the `Process` object that started them.

Protocol, one JSON object a line. Supervisor → server on the server's stdin:
`{"argv": [...], "title": [...], "log": PATH}`. Server → supervisor on its stdout:
`{"ready": PID}` once the imports are done, `{"pid": N}` for each request (or
`{"error": TEXT}`), and `{"exit": N, "code": C}` when a child ends (C as Popen's returncode:
negative for a signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

from counterpoint.agents.private_files import FILE_MODE, open_private_append
from counterpoint.infra.lifeline import SUPERVISOR_ENV, set_parent_death_signal

# What every built-in agent process imports before it consumes (infra/runner.py and the
# catalog's agents). A project's own modules are imported by the child that runs them.
PRELOAD: Final = (
    "counterpoint.infra.cli",
    "counterpoint.infra.runner",
    "counterpoint.agents.triage",
    "counterpoint.agents.investigator",
    "counterpoint.agents.synthesis",
    "counterpoint.agents.approvals",
    "counterpoint.agents.executor",
    "counterpoint.agents.memory",
    "counterpoint.agents.webhooks",
)
# The server's own command line is the room a child has for its title; this argument holds
# that room open (a title longer than the room is cut, see `set_cmdline`).
ROOM_FLAG: Final = "--title-room="
READY_TIMEOUT_S: Final = 60.0
REPLY_TIMEOUT_S: Final = 30.0
ENTRY_ENV: Final = "COUNTERPOINT_FORKSERVER_ENTRY"  # tests run another `main(argv)` here


def supported() -> bool:
    """Forking a warm interpreter is Linux-only here: macOS frameworks are not fork-safe, and
    the command line is rewritten through /proc/self/stat's addresses."""
    return sys.platform.startswith("linux") and Path("/proc/self/stat").exists()


# --- the server --------------------------------------------------------------------------


def set_cmdline(argv: Sequence[str]) -> bool:
    """Make /proc/self/cmdline read `argv`, NUL-separated, by rewriting the memory the kernel
    reads it from (the exec'd argv strings: arg_start..arg_end of /proc/self/stat). Cut to
    that room; False where the addresses cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, ValueError, IndexError):
        return False
    room = end - start
    if room <= 0:
        return False
    text = b"\0".join(a.encode() for a in argv)[:room - 1]
    ctypes.memmove(start, text.ljust(room, b"\0"), room)
    return True


def _write(fd: int, message: Mapping[str, Any]) -> None:
    os.write(fd, orjson.dumps(message) + b"\n")


def _exit_code(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(request: Mapping[str, Any], fds: Sequence[int]) -> int:
    """In the forked child: become the agent process the request describes; its exit code."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python process
    os.setsid()  # Ctrl-C in `up`'s terminal reaches `up` alone, as with an exec'd agent
    out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {out, null, *fds} - {0, 1, 2}:
        os.close(fd)
    set_cmdline(request["title"])
    # This process's supervisor is the server (the kernel's parent; infra/lifeline.py).
    os.environ[SUPERVISOR_ENV] = str(os.getppid())
    argv = list(request["argv"])
    sys.argv = [request["title"][0], *argv]
    entry = importlib.import_module(os.environ.get(ENTRY_ENV) or "counterpoint.infra.cli")
    return int(entry.main(argv))


def serve(preload: Sequence[str] = PRELOAD) -> int:
    """The server's loop: preload, answer requests, report exits; returns in a child with the
    child's exit code (the caller exits with it, so the interpreter shuts down as usual)."""
    requests_fd, replies_fd = 0, 1
    supervisor = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    set_parent_death_signal(signal.SIGTERM)
    if supervisor and os.getppid() != supervisor:
        return 0  # the supervisor died before the line above took effect
    for name in preload:
        importlib.import_module(name)
    # The preloaded heap is shared with every child until written: keep the collector off it.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _write(replies_fd, {"ready": os.getpid()})
    selector = selectors.DefaultSelector()
    selector.register(requests_fd, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    pending = b""
    while not stop:
        for key, _ in selector.select():
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                continue
            chunk = os.read(requests_fd, 65536)
            if not chunk:
                return 0  # the supervisor is done with us, or gone
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    request = orjson.loads(line)
                    pid = os.fork()
                except (orjson.JSONDecodeError, OSError) as exc:
                    _write(replies_fd, {"error": f"{type(exc).__name__}: {exc}"})
                    continue
                if pid == 0:  # a SystemExit in the child ends it as it would any process
                    selector.close()
                    return _child(request, (requests_fd, replies_fd, wake_r, wake_w))
                _write(replies_fd, {"pid": pid})
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _write(replies_fd, {"exit": pid, "code": _exit_code(status)})
    return 0


# --- the supervisor's side ---------------------------------------------------------------


class ForkedChild:
    """An agent process the fork server started, with the part of Popen's interface the
    supervisor and the tests use. Its exit code comes from the server, which is its parent."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._server.changed:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
                # Nothing reports an orphan's end: look again now and then.
                self._server.changed.wait(0.1 if self._server.gone else left)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never a pid that has ended and may be another's now
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The supervisor's handle on its fork server: started at once, waited for on the first
    request (its imports overlap whatever the supervisor does meanwhile)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, room: int) -> None:
        self._log_path = log_path
        with open_private_append(log_path) as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "counterpoint.infra.forkserver", ROOM_FLAG + " " * room],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                env=dict(env), start_new_session=True)
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self._requests: IO[bytes] = self.popen.stdin
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._gone = False
        self.changed = threading.Condition()
        self._lock = threading.Lock()  # one request and its reply at a time
        self._ready = False
        self._reader = threading.Thread(target=self._read, args=(self.popen.stdout,),
                                        name="forkserver-replies", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._gone and self.popen.poll() is None

    def _read(self, replies: IO[bytes]) -> None:
        for line in replies:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "exit" in message:
                with self.changed:
                    self._exits[int(message["exit"])] = int(message["code"])
                    self.changed.notify_all()
            else:
                self._replies.put(message)
        with self.changed:
            self._gone = True
            self.changed.notify_all()
        self._replies.put(None)

    def exit_code(self, pid: int) -> int | None:
        """The child's exit code once it ended. Were the server gone, its children are no
        longer anybody's to wait for: one that has ended (gone, or a zombie its new parent has
        not reaped yet) counts as exited with code 1."""
        with self.changed:
            code = self._exits.get(pid)
            if code is not None or not self._gone:
                return code
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 1
        return 1 if stat[stat.rindex(")") + 2] in "ZX" else None

    @property
    def gone(self) -> bool:
        return self._gone

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        try:
            message = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"the fork server did not answer within {timeout_s:g} s "
                               f"(see {self._log_path})") from None
        if message is None:
            raise RuntimeError(f"the fork server exited with code {self.popen.wait()} "
                               f"(see {self._log_path})")
        return message

    def spawn(self, argv: Sequence[str], title: Sequence[str], log_path: Path) -> ForkedChild:
        """A child running `counterpoint ARGV...`, shown as `title`, its output in log_path."""
        with self._lock:
            if not self._ready:
                self._reply(READY_TIMEOUT_S)
                self._ready = True
            request = {"argv": list(argv), "title": list(title), "log": str(log_path)}
            try:
                self._requests.write(orjson.dumps(request) + b"\n")
                self._requests.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise RuntimeError(f"the fork server is gone (see {self._log_path})") from exc
            reply = self._reply(REPLY_TIMEOUT_S)
        if "pid" not in reply:
            raise RuntimeError(f"the fork server could not start {' '.join(title)}: "
                               f"{reply.get('error', reply)}")
        return ForkedChild(self, int(reply["pid"]))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the server once its children are stopped: closing its requests ends it."""
        with contextlib.suppress(OSError, ValueError):
            self._requests.close()
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(timeout=timeout_s)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


if __name__ == "__main__":
    # No logging set up here: a child's `cli.main` configures its own, as in a fresh process.
    sys.exit(serve())
