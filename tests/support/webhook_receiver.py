"""A real local HTTP server that receives webhook deliveries, for tests.

Each path answers from its own script of status codes (then `default`) with `body`, and every
request is recorded with its headers and exact body bytes, so a test can check the signature
itself.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, scripts: dict[str, list[int]] | None = None, default: int = 200,
                 body: bytes = b"ok") -> None:
        self.scripts = {path: list(codes) for path, codes in (scripts or {}).items()}
        self.default = default
        self.body = body
        self.received: dict[str, list[Received]] = defaultdict(list)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received[self.path].append(
                        Received(self.path, dict(self.headers.items()), body))
                    script = receiver.scripts.get(self.path)
                    code = script.pop(0) if script else receiver.default
                self.send_response(code)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.received[path])
