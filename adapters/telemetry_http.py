"""The read-only HTTP server beside a node: GET/HEAD /metrics (the Prometheus text exposition of one
registry), / (the status page: bytes from a callable the caller supplies) and /healthz.

A request can never block, slow or crash the node:
  - one I/O thread does every socket operation, non-blocking, through a selector: accepting,
    reading request heads, writing answers. A client that sends nothing, trickles its head a byte at
    a time (slowloris) or never reads the answer holds a selector slot until its deadline
    (HEAD_TIMEOUT_S, WRITE_TIMEOUT_S), never a thread;
  - at most MAX_CONNECTIONS connections are open; a new one beyond that drops the oldest one still
    sending its head (a complete request is answered within milliseconds, so it is never the oldest);
  - a request head over MAX_HEAD_BYTES: 431; a method other than GET and HEAD: 405; no request body
    is ever read;
  - rendering (/metrics, /) runs in a fixed pool of `workers` daemon threads fed by a queue of
    `queue_size` requests; a request that finds the queue full is answered 503 at once;
  - each of /metrics and / is rendered at most once per `render_interval_s` (RENDER_INTERVAL_S):
    requests in between get the same bytes, so a flood costs the node's threads (which share the
    interpreter with these) a few renders a second, not one per request. Prometheus scrapes every
    15 s or so: a second-old value is the value;
  - an exception while rendering: 500 with one line of text; its detail goes to the log once (per
    distinct message), never to the client (it may name files) and never into the node.
Binding happens in the constructor, so a port in use, a privileged port, a host that does not
resolve or is not this machine's is a TelemetryBindError before the node does any work. Port 0
picks a free port (`.port` is the one bound). `close()` stops the threads and closes every socket.

Standard library only, plus prometheus_client's exposition (generate_latest, CONTENT_TYPE_LATEST);
not prometheus_client's own start_http_server, whose thread per request is unbounded."""

from __future__ import annotations

import errno
import logging
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from verification.errors import TelemetryBindError

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 5.0  # from accept to the end of the request head
WRITE_TIMEOUT_S = 10.0  # to write the whole answer
LINGER_S = 0.5  # after the answer: what the client still sends (a POST body) is read and dropped, so that
LINGER_BYTES = 65536  # closing with unread bytes does not reset the connection before it reads the answer
MAX_HEAD_BYTES = 8192  # request line and headers together
MAX_CONNECTIONS = 64  # open at once, in every phase but rendering
DEFAULT_WORKERS = 2
DEFAULT_QUEUE = 8
BACKLOG = 64
SELECT_TICK_S = 0.5  # the I/O loop looks at its stop flag at least this often
RENDER_INTERVAL_S = 1.0  # /metrics and / are rendered at most this often; requests between share the bytes
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
# the status page has inline CSS and SVG and no script, form or external resource
PAGE_HEADERS = ("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                "Referrer-Policy: no-referrer", "X-Frame-Options: DENY")
_LOGGED_MAX = 64

Page = Callable[[], bytes]


class _Conn:
    __slots__ = ("sock", "deadline", "inbuf", "out", "sent", "phase", "head_only", "registered", "drained")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline
        self.inbuf = bytearray()
        self.out = b""
        self.sent = 0
        self.phase = "read"  # read -> work (a worker renders) -> write -> linger -> closed
        self.head_only = False
        self.registered = False
        self.drained = 0


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(host: str, port: int, exc: OSError) -> TelemetryBindError:
    where = _where(host, port)
    if exc.errno == errno.EADDRINUSE:
        return _refused(host, port, "port", f"{where} is in use (another node or exporter listens there): "
                                            f"pick another port")
    if exc.errno in (errno.EACCES, errno.EPERM):
        if port < 1024:
            return _refused(host, port, "port", f"port {port} is privileged (below 1024) and this user may not "
                                                f"listen on it: use a port from 1024 up")
        return _refused(host, port, "port", f"listening on {where} is not permitted: {exc.strerror}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return _refused(host, port, "host", f"{host} is not an address of this machine (use 127.0.0.1, 0.0.0.0 "
                                            f"for every interface, or one of this machine's addresses)")
    return _refused(host, port, "host", f"cannot listen on {where}: {exc.strerror or exc}")


def _refused(host: str, port: int, part: str, message: str) -> TelemetryBindError:
    return TelemetryBindError(message, part=part, host=host, port=port)


def bind_listener(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking listening TCP socket on host:port, or TelemetryBindError saying why not."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _refused(host, port, "port", f"port {port!r} is out of range: 1024-65535 (0: any free port)")
    if not host or not host.strip():
        raise _refused(host, port, "host", "an empty host: give an address such as 127.0.0.1 (0.0.0.0: every "
                                           "interface)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise _refused(host, port, "host", f"{host} does not resolve ({why})") from None
    if not infos:
        raise _refused(host, port, "host", f"{host} does not resolve (no address)")
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # a restarted node may take its port back while the old connections sit in TIME_WAIT; a port
        # another socket listens on is still refused (EADDRINUSE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from None
    return sock


def _response(status: int, content_type: str, body: bytes, *, head_only: bool = False,
              headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store",
             "X-Content-Type-Options: nosniff", "Server: rollproof", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class TelemetryServer:
    """Serves `registry` at /metrics and `page()` at / (either may be None: that path is 404) and
    /healthz, on host:port, from daemon threads. Bound in the constructor (TelemetryBindError)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, registry: CollectorRegistry | None = None,
                 page: Page | None = None, workers: int = DEFAULT_WORKERS, queue_size: int = DEFAULT_QUEUE,
                 render_interval_s: float = RENDER_INTERVAL_S, name: str = "telemetry"):
        if registry is None and page is None:
            raise ValueError("a telemetry server serves a registry, a page or both")
        if workers < 1 or queue_size < 1:
            raise ValueError("workers and queue_size must be at least 1")
        self.name = name
        self.registry = registry
        self.page = page
        self._listener = bind_listener(host, port)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._done: deque = deque()  # (conn, status, content type, body, headers) rendered by a worker
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._accept_paused_until = 0.0
        self._conns: dict[socket.socket, _Conn] = {}  # in accept order
        self._stop = threading.Event()
        self._logged: set[str] = set()
        self.render_interval_s = render_interval_s
        self._rendered: dict[str, tuple[float, tuple]] = {}  # kind -> (monotonic time, the answer)
        self._rendering = {"metrics": threading.Lock(), "page": threading.Lock()}  # one render of each at a time
        self._io = threading.Thread(target=self._serve, name=f"{name}-io", daemon=True)
        self._workers = [threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._io.start()
        for t in self._workers:
            t.start()

    # ---- public --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{_where(self.host, self.port)}/"

    def close(self) -> None:
        """Stop serving: the I/O thread closes every socket; workers finish what they render."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        self._io.join(timeout=5)
        for _ in self._workers:
            try:
                self._jobs.put(None, timeout=1)
            except queue.Full:
                break
        for t in self._workers:
            t.join(timeout=2)

    def __enter__(self) -> "TelemetryServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the I/O thread --------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._tick()
                except Exception as exc:  # noqa: BLE001 - the loop must outlive any one surprise
                    self._log_once(f"I/O loop: {type(exc).__name__}: {exc}")
                    time.sleep(0.05)
        finally:
            self._shutdown()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        deadlines = [c.deadline for c in self._conns.values() if c.phase != "work"]
        timeout = min([SELECT_TICK_S, *(d - now for d in deadlines)])
        for key, mask in self._sel.select(max(0.0, timeout)):
            if key.data == "accept":
                self._accept()
            elif key.data == "wake":
                self._drain_wake()
            elif key.data.phase != "closed":
                try:
                    self._on_ready(key.data, mask)
                except OSError:
                    self._close(key.data)
        self._take_rendered()
        now = time.monotonic()
        for c in [c for c in self._conns.values() if c.phase != "work" and c.deadline <= now]:
            self._close(c)  # silent, trickling or not reading: its time is up

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors: stop accepting for a moment
                self._log_once(f"accept failed: {exc}")
                self._sel.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.1
                return
            sock.setblocking(False)
            if len(self._conns) >= MAX_CONNECTIONS:
                oldest = next((c for c in self._conns.values() if c.phase == "read"), None)
                if oldest is None:  # every slot is writing an answer: refuse this one
                    try:
                        sock.send(_response(503, TEXT, b"busy\n"))
                    except OSError:
                        pass
                    sock.close()
                    continue
                self._close(oldest)
            c = _Conn(sock, time.monotonic() + HEAD_TIMEOUT_S)
            self._conns[sock] = c
            self._watch(c, selectors.EVENT_READ)

    def _on_ready(self, c: _Conn, mask: int) -> None:
        if c.phase == "write":
            if mask & selectors.EVENT_WRITE:
                self._write(c)
            return
        try:
            data = c.sock.recv(4096)
        except BlockingIOError:
            return
        if c.phase == "linger":
            c.drained += len(data)
            if not data or c.drained > LINGER_BYTES:
                self._close(c)
            return
        if not data:  # the client went away before finishing its request
            self._close(c)
            return
        c.inbuf += data
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0 and len(c.inbuf) <= MAX_HEAD_BYTES:
            return
        if end < 0 or end > MAX_HEAD_BYTES:
            self._answer(c, 431, TEXT, b"request head too large\n")
            return
        self._dispatch(c, bytes(c.inbuf[:end]))

    def _dispatch(self, c: _Conn, head: bytes) -> None:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._answer(c, 400, TEXT, b"bad request\n")
            return
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            self._answer(c, 405, TEXT, b"read-only: GET or HEAD\n", headers=("Allow: GET, HEAD",))
            return
        c.head_only = method == b"HEAD"
        path = target.split(b"?", 1)[0]
        if path == b"/healthz":
            self._answer(c, 200, TEXT, b"ok\n")
        elif (path == b"/metrics" and self.registry is not None) or (path == b"/" and self.page is not None):
            self._unwatch(c)
            c.phase = "work"
            try:
                self._jobs.put_nowait((c, "metrics" if path == b"/metrics" else "page"))
            except queue.Full:  # every worker busy and the queue full: say so now, never wait
                self._answer(c, 503, TEXT, b"busy: try again\n", headers=("Retry-After: 1",))
        else:
            self._answer(c, 404, TEXT, b"not found: /metrics, / or /healthz\n")

    def _answer(self, c: _Conn, status: int, content_type: str, body: bytes, headers: tuple[str, ...] = ()) -> None:
        c.out = _response(status, content_type, body, head_only=c.head_only, headers=headers)
        c.sent = 0
        c.phase = "write"
        c.deadline = time.monotonic() + WRITE_TIMEOUT_S
        self._watch(c, selectors.EVENT_WRITE)

    def _write(self, c: _Conn) -> None:
        try:
            c.sent += c.sock.send(memoryview(c.out)[c.sent:])
        except BlockingIOError:
            return
        if c.sent < len(c.out):
            return
        c.sock.shutdown(socket.SHUT_WR)
        c.phase = "linger"
        c.deadline = time.monotonic() + LINGER_S
        self._watch(c, selectors.EVENT_READ)

    def _take_rendered(self) -> None:
        while self._done:
            c, status, content_type, body, headers = self._done.popleft()
            if c.phase == "work":  # not closed meanwhile (shutdown)
                self._answer(c, status, content_type, body, headers)

    def _watch(self, c: _Conn, events: int) -> None:
        if c.registered:
            self._sel.modify(c.sock, events, c)
        else:
            self._sel.register(c.sock, events, c)
            c.registered = True

    def _unwatch(self, c: _Conn) -> None:
        if c.registered:
            self._sel.unregister(c.sock)
            c.registered = False

    def _close(self, c: _Conn) -> None:
        if c.phase == "closed":
            return
        try:
            self._unwatch(c)
        except (KeyError, ValueError, OSError):
            pass
        c.phase = "closed"
        self._conns.pop(c.sock, None)
        try:
            c.sock.close()
        except OSError:
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is already pending) or closed (stopping)
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _shutdown(self) -> None:
        for c in list(self._conns.values()):
            self._close(c)
        for s in (self._listener, self._wake_r):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self._sel.close()
        self._wake_w.close()

    # ---- workers ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            c, kind = job
            try:
                rendered = self._render_shared(kind)
            except BaseException as exc:  # noqa: BLE001 - nothing a page does may end a worker
                self._log_once(f"{kind}: {type(exc).__name__}: {exc}")
                rendered = (500, TEXT, b"internal error: see the node's log\n", ())
            self._done.append((c, *rendered))
            self._wake()

    def _render_shared(self, kind: str) -> tuple[int, str, bytes, tuple[str, ...]]:
        """The last answer for `kind` if it is younger than render_interval_s, else a new one. One
        worker renders a kind at a time; another asking meanwhile gets the last answer, however old,
        or 503 before the first, and never waits: a page that hangs (a stalled disk) holds one worker,
        and /metrics keeps answering from the other."""
        at, answer = self._rendered.get(kind, (None, None))
        if at is not None and time.monotonic() - at < self.render_interval_s:
            return answer
        lock = self._rendering[kind]
        if not lock.acquire(blocking=False):
            return answer if answer is not None else (503, TEXT, b"busy: try again\n", ("Retry-After: 1",))
        try:
            answer = self._render(kind)
            self._rendered[kind] = (time.monotonic(), answer)
            return answer
        finally:
            lock.release()

    def _render(self, kind: str) -> tuple[int, str, bytes, tuple[str, ...]]:
        if kind == "metrics":
            try:
                return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), ()
            except Exception as exc:  # noqa: BLE001 - a collector's bug must not reach the node
                self._log_once(f"/metrics: {type(exc).__name__}: {exc}")
                return 500, TEXT, b"metrics unavailable: see the node's log\n", ()
        try:
            body = self.page()
            if not isinstance(body, (bytes, bytearray)):
                raise TypeError(f"the page returned {type(body).__name__}, not bytes")
        except Exception as exc:  # noqa: BLE001 - the page reads journals a node may be writing
            self._log_once(f"status page: {type(exc).__name__}: {exc}")
            return 500, TEXT, b"status page unavailable: see the node's log\n", ()
        return 200, HTML, bytes(body), PAGE_HEADERS

    def _log_once(self, message: str) -> None:
        """Each distinct failure once (a broken page would otherwise log on every refresh)."""
        if message in self._logged:
            return
        if len(self._logged) < _LOGGED_MAX:
            self._logged.add(message)
        log.warning("%s server on %s: %s (logged once)", self.name, _where(self.host, self.port), message)
