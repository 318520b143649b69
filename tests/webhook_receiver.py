"""A finance system's webhook receiver, on loopback: it verifies every request with the
`standardwebhooks` package (as a real consumer would) and records what it got."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float  # time.time() when it arrived
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Receiver:
    """Answers 2xx unless told otherwise: `fail_first` answers 500 to the first N attempts of
    each webhook-id, `status` answers that to everything, `delay` sleeps before answering,
    `together` holds each request until that many are being answered at once (a barrier; a
    sender that never has that many in flight gets 503s once the barrier gives up), and `hold`
    holds every answer until that event is set (503 if it never is). `arrived` is set when the
    first request arrives."""

    secret: str | None = None
    fail_first: int = 0
    status: int = 204
    delay: float = 0.0
    together: int = 0
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    most_in_flight: int = 0  # requests being answered at once, at most so far
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _barrier: threading.Barrier | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without this, a body waits out the sender's
            # delayed ACK of the headers (40 ms on Linux).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answered = receiver._answer(headers, body)
                if receiver.together:
                    answered = receiver._wait_for_the_others(answered)
                if receiver.hold is not None and not receiver.hold.wait(timeout=60):
                    answered = 503  # 60 s: a bound on a hang, not a speed requirement
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver._in_flight -= 1
                reply = b"" if answered == 204 else b"ok"  # a 204 carries no body
                self.send_response(answered)
                self.send_header("content-length", str(len(reply)))
                if 300 <= answered < 400:
                    self.send_header("location", "/moved")
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval: stop() (its shutdown) waits for the serving loop to look again.
        serve = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        serve.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except Exception:
                verified = False
        msg_id = headers.get("webhook-id", "")
        with self._lock:
            earlier = sum(1 for r in self.received if r.webhook_id == msg_id)
            answered = 400 if not verified else self.status
            if verified and earlier < self.fail_first:
                answered = 500
            self.received.append(Received(msg_id, headers, body, verified, time.time(), answered))
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        self.arrived.set()
        return answered

    def _wait_for_the_others(self, answered: int) -> int:
        with self._lock:
            if self._barrier is None:
                self._barrier = threading.Barrier(self.together)
            barrier = self._barrier
        try:
            barrier.wait(timeout=60)  # a bound on a hang, not a speed requirement
        except threading.BrokenBarrierError:
            return 503
        return answered

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def ids_accepted(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.accepted())

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until `count` requests were accepted (or time runs out); answer them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.accepted()) < count:
            time.sleep(0.02)
        return self.accepted()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
