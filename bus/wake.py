"""Nudges between processes on one host, for a broker that never wakes a waiting fetch.

The embedded broker (Tansu) answers a fetch at once when records are there, but a fetch that
finds nothing sleeps its whole `fetch_max_wait_ms`, even when records arrive meanwhile. Polling
often enough for low latency costs the broker a core at idle. So on that broker a consumer with
nothing to do stops fetching altogether, and whoever publishes tells it: after the broker acked
a record for topic T, the publisher sends one empty datagram to every local consumer of T.
A nudge carries nothing but "look now", so a forged or lost one costs at most a fetch or some
latency; consumers still fetch every idle-poll interval, which covers publishers that do not
nudge (other hosts, any other Kafka client).

Each consumer binds one Unix datagram socket per topic it reads, at
`<tmp>/counterpoint-<uid>/<broker>/<topic>/<pid>.sock` (names hashed to keep paths short), and
removes it when it stops. Publishers list a topic's folder at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

NUDGE: Final = b"\x01"
# How long a publisher trusts its listing of a topic's consumers.
LISTING_TTL_S: Final = 1.0
_SUFFIX: Final = ".sock"


def _short(text: str) -> str:
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def wake_root() -> Path:
    return Path(tempfile.gettempdir()) / f"counterpoint-{os.getuid()}"


def topic_dir(broker: str, topic: str, root: Path | None = None) -> Path:
    """Where the consumers of `topic` on `broker` (its advertised identity) have sockets."""
    return (root or wake_root()) / _short(broker) / _short(topic)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Listener:
    """This process's sockets for the topics it consumes; `event` is set on every nudge."""

    def __init__(self, broker: str, topics: Iterable[str], root: Path | None = None) -> None:
        self.event = asyncio.Event()
        self._dirs = [topic_dir(broker, t, root) for t in sorted(set(topics))]
        self._socks: list[tuple[socket.socket, Path]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Bind the sockets. Any failure leaves this process fetching on its idle poll only."""
        self._loop = asyncio.get_running_loop()
        for folder in self._dirs:
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                folder.parent.parent.chmod(0o700)  # the per-user root: nobody else nudges
                _prune(folder)
                path = folder / f"{os.getpid()}{_SUFFIX}"
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # left by an earlier process with this pid
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    sock.bind(str(path))
                except OSError:
                    sock.close()  # e.g. a path longer than a Unix socket's 107 bytes
                    raise
            except OSError as exc:
                log.warning("no wake-up socket in %s (%s): new records are seen on the idle "
                            "poll only", folder, exc)
                continue
            self._loop.add_reader(sock.fileno(), self._readable, sock)
            self._socks.append((sock, path))

    def _readable(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(16):
                pass
        self.event.set()

    def close(self) -> None:
        for sock, path in self._socks:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()
        self._socks.clear()


def _prune(folder: Path) -> None:
    """Remove sockets whose process is gone (SIGKILL leaves them behind)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            stem = entry.name.removesuffix(_SUFFIX)
            if entry.name.endswith(_SUFFIX) and stem.isdigit() and not _alive(int(stem)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class Nudger:
    """Sends one datagram to each local consumer of a topic; batched per loop iteration."""

    def __init__(self, broker: str, root: Path | None = None) -> None:
        self._broker = broker
        self._root = root
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._listings: dict[str, tuple[float, list[str]]] = {}
        self._pending: set[str] = set()
        self.sent = 0  # datagrams sent, for the bench and tests

    def nudge(self, topic: str) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.add(topic)

    def _flush(self) -> None:
        topics, self._pending = self._pending, set()
        for topic in topics:
            for path in self._targets(topic):
                try:
                    self._sock.sendto(NUDGE, path)
                    self.sent += 1
                except OSError:
                    pass  # gone, or its queue is full: either way it is awake or will poll

    def _targets(self, topic: str) -> list[str]:
        now = time.monotonic()
        cached = self._listings.get(topic)
        if cached is not None and now - cached[0] < LISTING_TTL_S:
            return cached[1]
        folder = topic_dir(self._broker, topic, self._root)
        try:
            with os.scandir(folder) as entries:
                paths = [e.path for e in entries if e.name.endswith(_SUFFIX)]
        except OSError:
            paths = []
        self._listings[topic] = (now, paths)
        return paths

    def close(self) -> None:
        self._sock.close()
