"""A small threaded HTTP proxy on 127.0.0.1 in front of the session's moto S3 server that injects storage
faults: an error status (500, 503), a reset connection, a stall longer than the client's read timeout, or a
lost reply (the request reaches S3, its answer never comes back). A fault fires on the Nth request or once
N bytes of request bodies went through (cutting that request's body there), once or as an outage (every
request from then on)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

STALL_SECONDS = 3.0  # longer than the test client's read timeout (FAULT_READ_TIMEOUT), and bounded
ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>'
)


@dataclass
class Fault:
    mode: str  # "500", "503", "reset", "stall", "lost_reply"
    at_request: int | None = None  # 1-based
    after_bytes: int | None = None
    outage: bool = False


class FaultyS3Proxy:
    """Forwards S3 requests to `upstream`, counting them, and injects the armed Fault."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.lock = threading.Lock()
        self.fault: Fault | None = None
        self.requests = 0
        self.body_bytes = 0
        self.fired = 0
        self.log: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                proxy.serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, *arguments: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets and stalls end requests abruptly on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arm(self, fault: Fault | None) -> None:
        """Arm `fault` (None heals) and restart the request and byte counts."""
        with self.lock:
            self.fault, self.requests, self.body_bytes, self.fired = fault, 0, 0, 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, length: int) -> tuple[str | None, int | None]:
        """Count one request with a body of `length`; return the fault to inject (if any) and where to cut
        the body (None: read it whole)."""
        with self.lock:
            self.requests += 1
            before, self.body_bytes = self.body_bytes, self.body_bytes + length
            fault = self.fault
            if fault is None:
                return None, None
            due = (fault.at_request is not None and self.requests >= fault.at_request) or (
                fault.after_bytes is not None and self.body_bytes > fault.after_bytes
            )
            if not due or (self.fired and not fault.outage):
                return None, None
            self.fired += 1
            cut = None
            if self.fired == 1 and fault.after_bytes is not None and fault.mode in ("reset", "stall"):
                cut = max(0, fault.after_bytes - before)
            return fault.mode, cut

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        mode, cut = self._decide(length)
        self.log.append(f"{handler.command} {handler.path.split('?')[0]} {mode or ''}")
        if cut is not None:
            handler.rfile.read(cut)
            self._break(handler, mode)
            return
        body = handler.rfile.read(length) if length else b""
        if mode in ("500", "503"):
            code = b"InternalError" if mode == "500" else b"ServiceUnavailable"
            self._reply(handler, int(mode), [("Content-Type", "application/xml")], ERROR_BODY.replace(b"{code}", code))
            return
        if mode in ("reset", "stall"):
            self._break(handler, mode)
            return
        status, headers, answer = self._forward(handler, body)
        if mode == "lost_reply":
            self._break(handler, "reset")
            return
        self._reply(handler, status, headers, answer)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> tuple[int, list[Any], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            skip = {"connection", "content-length", "transfer-encoding"}
            headers = {key: value for key, value in handler.headers.items() if key.lower() not in skip}
            headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = [(key, value) for key, value in response.getheaders() if key.lower() not in skip]
            return response.status, kept, answer
        finally:
            connection.close()

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, headers: list[Any], body: bytes) -> None:
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    @staticmethod
    def _break(handler: http.server.BaseHTTPRequestHandler, mode: str | None) -> None:
        """End the connection without an answer: a reset at once, or after a stall."""
        if mode == "stall":
            time.sleep(STALL_SECONDS)
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
