"""A real HTTP server on 127.0.0.1 that enforces its own limit, as an upstream API would: a fixed
window of ``quota`` requests per second (ratekeeper's own limiter) and its headers on every
answer, in one of two styles: the IETF draft-10 fields or the classic X-RateLimit ones."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ratekeeper import RateLimiter

SERVICE_TIME = 0.01  # seconds each answer takes, so that requests overlap in flight
POLL = 0.02  # seconds between two looks at the shutdown flag
STYLES = {
    "draft10": ("RateLimit", "RateLimit-Policy", "Retry-After"),
    "classic": ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"),
}


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # many callers connect at once (the default 5 stalls them 1 s)
    daemon_threads = True


class Upstream:
    def __init__(self, quota: int, style: str = "draft10") -> None:
        self.limiter = RateLimiter(f"{quota}/second", algorithm="fixed_window")
        self.fields = STYLES[style]
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                time.sleep(SERVICE_TIME)
                decision = upstream.limiter.hit("client")
                status = 200 if decision.allowed else 429
                with upstream.lock:
                    upstream.statuses[status] += 1
                body = b"ok" if decision.allowed else b"slow down"
                self.send_response(status)
                for name, value in decision.headers().items():
                    if name in upstream.fields:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(POLL,), daemon=True)
        self.thread.start()

    def drain(self) -> None:
        """Use up the current window's quota, as another client of the API would."""
        while self.limiter.hit("client").allowed:
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
