"""A local webhook receiver for tests: records each POST, answers scripted statuses."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "whsec_test_secret"


class Receiver:
    """A tiny HTTP server that records each POST and answers the next scripted status."""

    def __init__(self, port: int = 0) -> None:
        """``port``: that of a receiver closed before (a receiver that was down comes back)."""
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        # Per path, before ``statuses``: deliveries to several URLs run in parallel.
        self.path_statuses: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "at": time.monotonic(),
                    }
                )
                scripted = receiver.path_statuses.get(self.path) or receiver.statuses
                status = scripted.pop(0) if scripted else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
