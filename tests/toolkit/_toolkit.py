"""Helpers of the toolkit tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class HTTPServer:
    """A threaded HTTP server on 127.0.0.1 (port 0): /ok 200, /missing 404, /error 500,
    /slow (0.3 s, then 200). Counts requests by path. `stop()` kills it: the port is closed
    and open keep-alive connections are dropped without an answer."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.running = True
        lock = threading.Lock()
        hits = self.hits
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def do_GET(self) -> None:
                if not server.running:  # dead: keep-alive connections are dropped without an answer
                    self.close_connection = True
                    return
                with lock:
                    hits[self.path] += 1
                status = {"/ok": 200, "/missing": 404, "/error": 500, "/slow": 200}.get(self.path, 404)
                if self.path == "/slow":
                    time.sleep(0.3)  # models a slow upstream
                body = f"{status} {self.path}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out closed its end: nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
