"""A loopback TCP relay that can hold back the server's bytes for a while: a node (or proxy) that is
slow to answer, on demand. Used to make a slow websocket close happen every time, not only under
load (tests/test_subtensor_live.py)."""

from __future__ import annotations

import socket
import threading
import time


class StallingRelay:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._hold_until = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://{self.upstream[0]}:{self.port}"

    def stall(self, seconds: float) -> None:
        """From now on, bytes from the server wait until `seconds` have passed."""
        self._hold_until = time.monotonic() + seconds

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if held and (wait := self._hold_until - time.monotonic()) > 0:
                    time.sleep(wait)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def drip_handler(length: int, interval_s: float, max_bytes: int | None = None) -> type:
    """An HTTP handler that answers 200 with Content-Length `length` and then sends one byte every
    `interval_s` (at most `max_bytes`, default `length`): a location whose body never arrives in
    time (the validator's fetch tests and scripts/stalling_sybils.py). `length` is a class
    attribute, so a caller may change it after the server started."""
    import http.server

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(self.length))
            self.end_headers()
            try:
                for _ in range(self.length if max_bytes is None else max_bytes):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(interval_s)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    Drip.length = length
    return Drip
