"""CloudFormation's side of a custom resource in tests: a local HTTP server standing in for the pre-signed S3
``ResponseURL`` (it records what is PUT to it), and the context of a function with 15 minutes to run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.integration.test_lambda_handlers import FakeContext


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ResponseEndpoint:
    """A local HTTP server that records what is PUT to it, as S3 would take CloudFormation's answer."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200

    def only(self) -> Received:
        assert len(self.received) == 1, self.received
        return self.received[0]


@contextmanager
def response_endpoint() -> Iterator[ResponseEndpoint]:
    """A ``ResponseEndpoint`` listening on localhost while the block runs."""
    recorder = ResponseEndpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            recorder.received.append(Received("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(recorder.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class LongContext(FakeContext):
    """The migration function's context: 15 minutes to run, as the template gives it."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000
