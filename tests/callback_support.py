"""A callback receiver for tests: a real HTTP server on a free loopback port, in a thread, that records what
it is sent (any method) and answers with the status a test chooses; and one that answers a byte at a time."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class CallbackReceiver:
    """`with CallbackReceiver() as receiver:` then POST to `receiver.url`; `receiver.received` lists the calls."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST  # a replayer's server records whatever it is sent

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/batch-ended"

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class DrippingReceiver:
    """A receiver that reads the whole request, then answers one byte every `pause` seconds: each read of the
    answer arrives well within any read timeout, yet the answer takes as long as the receiver likes. `endless`
    drips header lines until the receiver stops; otherwise it sends a 204 whole, slowly, and closes."""

    ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def __init__(self, pause: float = 0.3, *, endless: bool = False) -> None:
        self.pause, self.endless = pause, endless
        self.requests = 0  # requests read whole
        self.answered = 0  # answers sent to their last byte
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/batch-ended"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            thread = threading.Thread(target=self._drip, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            head, body = received.split(b"\r\n\r\n", 1)
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += connection.recv(65536)
            self.requests += 1
            try:
                for byte in self._answer():
                    if self._stop.wait(self.pause):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up and closed
            self.answered += 1

    def _answer(self) -> Iterator[int]:
        if not self.endless:
            yield from self.ANSWER
            return
        yield from b"HTTP/1.1 204 No Content\r\n"
        while True:
            yield from b"X-Drip: 1\r\n"  # one more header line, for ever

    def __enter__(self) -> DrippingReceiver:
        thread = threading.Thread(target=self._accept, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
