"""A webhook receiver in this process that can be taken down: it answers 200, or 503 while
`down` is set (a service whose backends are gone, behind its load balancer), and notes the
arrival of every call. The circuit breaker's test and benchmark use it."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FlakyReceiver:
    """A real HTTP receiver that answers 200, or 503 while it is down, and counts each call."""

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[float, bool]] = []  # (arrival, answered while down)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the node's client expects

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.calls.append((time.monotonic(), owner.down))
                self.send_response(503 if owner.down else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # every `@every 1s` job fires at the same instant: a deep backlog
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.calls if start <= at < end)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
