"""An HTTP server on 127.0.0.1 that misbehaves on request: the flaky mirror of the fault tests.

``faults[path]`` is a queue consumed one entry per request:

- ``"500"``/``"503"``/``"401"``/``"404"``: that status;
- ``"truncate"``: promise more bytes than are sent, then close;
- ``"stall"``: send nothing for ``stall_seconds``; ``"stall-body"``: send half the body, then stall;
- ``"reset"``: close the connection without a response.

With ``upstream`` set, requests without a queued fault are forwarded there (a flaky proxy in
front of a real registry); otherwise ``files[path]`` is served. ``hits`` counts requests per path.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, upstream: str | None = None, stall_seconds: float = 3.0):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.every: list[str] = []  # faults for any path, consumed before per-path ones
        self.hits: Counter[str] = Counter()
        self.upstream = upstream
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def _fault(self) -> str | None:
                with outer._lock:
                    outer.hits[self.path.split("?")[0]] += 1
                    if outer.every:
                        return outer.every.pop(0)
                    queue = outer.faults.get(self.path) or []
                    return queue.pop(0) if queue else None

            def _serve(self, head_only: bool = False):
                fault = self._fault()
                body = outer.files.get(self.path)
                if fault and fault.isdigit():
                    self.send_response(int(fault))
                    if fault == "401":
                        self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "stall":
                    time.sleep(outer.stall_seconds)
                    self.close_connection = True
                    return
                if outer.upstream and body is None:
                    return self._forward(head_only)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (1000 if fault == "truncate" else 0)))
                self.end_headers()
                if head_only:
                    return
                if fault in ("truncate", "stall-body"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "stall-body":
                        time.sleep(outer.stall_seconds)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _forward(self, head_only: bool):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers: dict[str, str] = {}
                for k, v in self.headers.items():  # repeated headers (Accept) are joined, not dropped
                    if k.lower() not in ("host", "connection"):
                        headers[k] = f"{headers[k]}, {v}" if k in headers else v
                req = urllib.request.Request(outer.upstream + self.path, data=data, method=self.command,
                                             headers=headers)
                try:
                    resp = urllib.request.urlopen(req, timeout=30)
                    status, headers, payload = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as exc:
                    status, headers, payload = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v.replace(outer.upstream, outer.url))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(payload)

            def do_GET(self):  # noqa: N802 - http.server API
                self._serve()

            def do_HEAD(self):  # noqa: N802
                self._serve(head_only=True)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815 - forwarded to the upstream

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.host = self.url.removeprefix("http://")
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
