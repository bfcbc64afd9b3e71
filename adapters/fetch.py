"""The validator's reader of committed locations: file://, s3:// and http(s)://.

Every location a miner commits is attacker-chosen, so a fetch here is bounded and confined:

- one total deadline per fetch (the Fetcher's timeout, FETCH_TIMEOUT_S by default) covering name
  resolution, connect, TLS handshake, headers and every body read: each socket operation gets the
  time left of that budget, so a server dribbling one byte at a time cannot stretch a fetch;
- one size cap for every scheme (MAX_BUNDLE_BYTES or the caller's: a validator passes its window's
  bundle bound), checked against the declared Content-Length before reading and against the bytes
  actually read (FetchTooLargeError);
- fetch_many: many fetches at once under one total budget (a validator's window), so stalling
  locations hold a slot for at most their own deadline and never past the budget;
- http(s): the host is resolved once, every address is checked (no loopback, private, CGNAT,
  link-local, multicast, reserved or unspecified address, nor one embedded in an IPv4-mapped,
  6to4 or NAT64 IPv6 address) and the connection goes to that checked address (TLS still verifies
  the certificate against the host name, with SNI), so a second DNS answer cannot rebind it;
  redirects are not followed; only the identity content coding is accepted (no decompression);
- file://: only regular files inside the allowed roots (after symlinks and `..`), opened without
  following a last-moment symlink and without blocking (a FIFO or device is refused, never opened
  for a blocking read).

Every failure is a StorageError; a fetch never returns partial data."""

from __future__ import annotations

import http.client
import io
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from verification.constants import FETCH_TIMEOUT_S, MAX_BUNDLE_BYTES
from verification.errors import StorageError

HTTP_READ_CHUNK = 64 * 1024
FILE_READ_CHUNK = 4 * 1024 * 1024
USER_AGENT = "rollproof-validator"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchTooLargeError(StorageError):
    """The location holds more bytes than the caller's size cap (declared or actually sent): the
    validator reports it as bundle_too_large, refused before a byte of it is parsed."""

# ---- which addresses a validator may connect to ------------------------------------------------

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: last 32 bits are an IPv4 address
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# global-looking prefixes that older `ipaddress` tables do not mark: documentation (RFC 9637)
_IPV6_REFUSED_EXTRA = (ipaddress.IPv6Network("3fff::/20"),)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address is a transport for: IPv4-mapped (::ffff:a.b.c.d), 6to4
    (2002:AABB:CCDD::/48) or NAT64 (64:ff9b::a.b.c.d). Connecting to the IPv6 form reaches (or, via
    a relay or translator, can reach) the IPv4 one, so it is judged as that address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True when ip is a globally routable unicast address a validator may fetch from.

    Refused: loopback, RFC 1918, CGNAT 100.64/10, link-local (169.254/16: cloud metadata), multicast,
    unspecified, broadcast, reserved and documentation ranges, IPv6 ULA, link-local and site-local,
    anything outside 2000::/3, Teredo, and any IPv6 form embedding a refused IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # a zone index only exists on link-scoped addresses
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public_address(inner)
        return (ip in _IPV6_GLOBAL_UNICAST and ip.is_global and ip.teredo is None
                and not any(ip in net for net in _IPV6_REFUSED_EXTRA))
    # ipaddress calls IPv4 multicast global (it is not private); a validator never fetches from it
    return ip.is_global and not ip.is_multicast


# ---- the total deadline ------------------------------------------------------------------------

def _remaining(deadline: float) -> float:
    """Seconds left before deadline; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("fetch deadline passed")
    return left


class _DeadlineSocket:
    """What http.client sees as its socket. Each send and each recv first sets the socket timeout
    to the time left of the fetch's budget: a plain socket timeout bounds one recv, not the
    download, and a server sending a byte every few seconds would never trip it."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        self._sock.settimeout(_remaining(self._deadline))

    def sendall(self, data) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        if mode != "rb":
            raise ValueError(f"unsupported makefile mode {mode!r}")
        return io.BufferedReader(_DeadlineReader(self), HTTP_READ_CHUNK)

    def close(self) -> None:
        # http.client "closes" the connection as soon as a response says Connection: close, while
        # the response still reads from it; the fetch closes the real socket when it is done
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)


# ---- http(s) -----------------------------------------------------------------------------------

def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int, deadline: float) -> list[tuple[int, tuple]]:
    """(family, sockaddr) of every address of host, resolved once, within the deadline."""
    if _literal_ip(host) is not None:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    else:
        # getaddrinfo takes no timeout; a resolver that stalls must not hold the fetch past its
        # budget, so it runs in a daemon thread (which ends when the system resolver gives up)
        box: dict[str, object] = {}

        def work() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                box["error"] = exc

        worker = threading.Thread(target=work, name=f"resolve {host}", daemon=True)
        worker.start()
        worker.join(_remaining(deadline))
        if worker.is_alive():
            raise TimeoutError(f"resolving {host} did not finish")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        infos = box["infos"]  # type: ignore[assignment]
    out = []
    for family, _, _, _, sockaddr in infos:  # type: ignore[union-attr]
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in out:
            out.append((family, sockaddr))
    if not out:
        raise OSError(f"{host} has no IPv4 or IPv6 address")
    return out


def _connect(addresses: list[tuple[int, tuple]], deadline: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that accepts one."""
    last: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            last = exc
    assert last is not None
    raise last


def _declared_length(resp: http.client.HTTPResponse, url: str) -> int | None:
    values = resp.headers.get_all("Content-Length") or []
    if not values:
        return None
    if len(set(v.strip() for v in values)) != 1 or not values[0].strip().isdigit():
        raise StorageError(f"cannot fetch {url}: invalid Content-Length {values!r}")
    return int(values[0].strip())


def _read_http(url: str, limit: int, timeout: float, *, allow_private: bool,
               ssl_context: ssl.SSLContext | None) -> bytes:
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host:
        raise StorageError(f"cannot fetch {url}: no host")
    if parts.username is not None or parts.password is not None:
        raise StorageError(f"cannot fetch {url}: credentials in a location are refused")
    conn: http.client.HTTPConnection | None = None
    sock: socket.socket | None = None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = _resolve(host, port, deadline)
        if not allow_private:
            for _, sockaddr in addresses:
                ip = ipaddress.ip_address(sockaddr[0])
                if not is_public_address(ip):
                    named = host if _literal_ip(host) is not None else f"{host} resolves to {ip}, which"
                    raise StorageError(f"cannot fetch {url}: {named} is not a public address (loopback, "
                                       "private, link-local and other non-global addresses are refused)")
        sock = _connect(addresses, deadline)
        if parts.scheme == "https":
            context = ssl_context or ssl.create_default_context()
            sock.settimeout(_remaining(deadline))
            # SNI and the certificate check use the host name, the TCP peer is the checked address
            tcp, sock = sock, None
            try:
                sock = context.wrap_socket(tcp, server_hostname=host)
            finally:
                if sock is None:
                    tcp.close()
            conn = http.client.HTTPSConnection(host, port, context=context)
        else:
            conn = http.client.HTTPConnection(host, port)
        conn.sock = _DeadlineSocket(sock, deadline)  # type: ignore[assignment]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers={"Accept-Encoding": "identity", "Connection": "close",
                                             "User-Agent": USER_AGENT})
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise StorageError(f"cannot fetch {url}: HTTP {resp.status} redirect to "
                               f"{resp.getheader('Location')!r} not followed")
        if resp.status != 200:
            raise StorageError(f"cannot fetch {url}: HTTP {resp.status} {resp.reason}")
        encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise StorageError(f"cannot fetch {url}: Content-Encoding {encoding!r} refused (identity only)")
        transfer = resp.getheader("Transfer-Encoding")
        if transfer is not None and transfer.strip().lower() != "chunked":  # e.g. "gzip, chunked"
            raise StorageError(f"cannot fetch {url}: Transfer-Encoding {transfer.strip()!r} refused")
        declared = None if resp.chunked else _declared_length(resp, url)
        if declared is not None and declared > limit:
            raise FetchTooLargeError(f"{url} is {declared} bytes, larger than the limit of {limit} bytes")
        data = bytearray()
        while True:
            chunk = resp.read(min(HTTP_READ_CHUNK, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
            if len(data) > limit:
                raise FetchTooLargeError(f"{url} is larger than {limit} bytes")
        if declared is not None and len(data) != declared:
            raise StorageError(f"cannot fetch {url}: body ended after {len(data)} of {declared} bytes")
        return bytes(data)
    except StorageError:
        raise
    except TimeoutError:
        raise StorageError(f"cannot fetch {url}: not complete within {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise StorageError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
    finally:
        if conn is not None:
            conn.close()
        if sock is not None:
            sock.close()


# ---- local files -------------------------------------------------------------------------------

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_regular_fd(fd: int, name: str, limit: int, deadline: float | None) -> bytes:
    """All bytes of an open regular file, at most limit, checked once more on the open file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{name} is not a regular file")
    if st.st_size > limit:
        raise FetchTooLargeError(f"{name} is larger than {limit} bytes")
    chunks, total = [], 0
    while True:
        if deadline is not None:
            _remaining(deadline)
        chunk = os.read(fd, min(FILE_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:  # the file grew while it was read
            raise FetchTooLargeError(f"{name} is larger than {limit} bytes")
    return b"".join(chunks)


def read_local_file(path: Path | str, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
    """The bytes of a regular file (symlinks followed), at most max_bytes. A FIFO, device, socket
    or directory is refused without a blocking open, so naming one cannot hang the caller."""
    name = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise StorageError(f"{name} is not a regular file")
        fd = os.open(path, _OPEN_FLAGS)
        try:
            return _read_regular_fd(fd, name, max_bytes, None)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot read {name}: {exc.strerror or exc}") from None


def _read_beneath(root: Path, parts: tuple[str, ...], name: str, limit: int, deadline: float) -> bytes:
    """Read root/parts[0]/.../parts[-1] walking from root one component at a time with
    O_NOFOLLOW: a symlink swapped in after the path was resolved is refused, not followed."""
    if not parts:
        raise StorageError(f"{name} is not a regular file")
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            # refuse non-regular files before opening them: opening some devices has side effects
            if not stat.S_ISREG(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise StorageError(f"{name} is not a regular file")
            fd = os.open(parts[-1], _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            return _read_regular_fd(fd, name, limit, deadline)
        finally:
            os.close(fd)
    except TimeoutError:
        raise StorageError(f"cannot read {name}: not complete within the fetch deadline") from None
    except OSError as exc:
        raise StorageError(f"cannot read {name}: {exc.strerror or exc}") from None


# ---- s3 ----------------------------------------------------------------------------------------

def _s3_socket(body) -> socket.socket | None:
    """The TCP socket under a botocore streaming body (the path botocore.compat.set_socket_timeout
    takes), or None for a stream without one (moto, custom transports)."""
    try:
        sock = body._raw_stream._fp.fp.raw._sock
    except AttributeError:
        return None
    return sock if isinstance(sock, socket.socket) else None


def _shutdown(sock: socket.socket, fired: threading.Event) -> None:
    fired.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on it, in any thread
    except OSError:
        pass


def read_s3_object(client, bucket: str, key: str, max_bytes: int, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The object's bytes through the validator's own client, at most max_bytes, within timeout.
    The request itself is bounded by the client's connect/read timeouts (boto3 offers no total
    one); the body is bounded by what is left of timeout: a body read only bounds each recv, so at
    the deadline a watchdog shuts the socket down, which ends the read."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = f"s3://{bucket}/{key}"
    if not bucket or not key:
        raise StorageError(f"{name}: an s3 location needs a bucket and a key")
    deadline = time.monotonic() + timeout
    fired = threading.Event()
    try:
        # the range caps the download at max_bytes + 1, which the length check catches
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        sock = _s3_socket(body)
        watchdog = None
        if sock is not None:
            watchdog = threading.Timer(_remaining(deadline), _shutdown, (sock, fired))
            watchdog.daemon = True
            watchdog.start()
        try:
            chunks, total = [], 0
            while True:
                _remaining(deadline)
                chunk = body.read(min(FILE_READ_CHUNK, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise FetchTooLargeError(f"{name} is larger than {max_bytes} bytes")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            body.close()
        if fired.is_set():
            raise TimeoutError("the watchdog ended the read")
    except StorageError:
        raise
    except TimeoutError:
        raise StorageError(f"cannot fetch {name}: not complete within {timeout:g} s") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        if fired.is_set():
            raise StorageError(f"cannot fetch {name}: not complete within {timeout:g} s") from None
        raise StorageError(f"cannot fetch {name}: {exc}") from None
    return b"".join(chunks)


# ---- the fetcher -------------------------------------------------------------------------------

class Fetcher:
    """Reads committed locations for a validator. file:// is allowed only under `file_roots` (a
    validator must not read arbitrary local files because a miner said so); s3:// uses the
    validator's own client; http(s):// reaches only public addresses unless allow_private (for a
    local network of test nodes). `ssl_context` replaces the default certificate store (a private CA)."""

    def __init__(self, *, file_roots: list[Path] | None = None, s3_client=None,
                 timeout: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_BUNDLE_BYTES,
                 allow_private: bool = False, ssl_context: ssl.SSLContext | None = None):
        self.file_roots = [Path(os.path.realpath(Path(r).expanduser())) for r in (file_roots or [])]
        self.s3_client = s3_client
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.ssl_context = ssl_context
        self._s3_lock = threading.Lock()

    def fetch(self, location: str, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        """The bytes at location, at most max_bytes (default: the fetcher's bundle limit), within
        timeout seconds (never more than the fetcher's timeout); StorageError otherwise
        (FetchTooLargeError when the location holds more than max_bytes)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        budget = self.timeout if timeout is None else min(timeout, self.timeout)
        if not isinstance(location, str):
            raise StorageError(f"a location is a string, not {type(location).__name__}")
        parsed = urllib.parse.urlsplit(location)
        if parsed.scheme == "file":
            return self._read_file(location, parsed, limit, budget)
        if parsed.scheme == "s3":
            return read_s3_object(self._s3(), parsed.netloc, parsed.path.lstrip("/"), limit, budget)
        if parsed.scheme in ("http", "https"):
            return _read_http(location, limit, budget, allow_private=self.allow_private,
                              ssl_context=self.ssl_context)
        raise StorageError(f"unsupported location scheme {parsed.scheme!r}")

    def fetch_many(self, locations: list[str], max_workers: int = 4, *, max_bytes: int | None = None,
                   timeout: float | None = None, budget_s: float | None = None,
                   on_fetched: Callable[[float], None] | None = None) -> list[bytes | StorageError]:
        """Fetch every location, at most max_workers at once, each at most max_bytes within its own
        timeout (fetch's arguments); in input order, each item the bytes or the StorageError of that
        location. budget_s bounds the whole call: a fetch gets at most what is left of it, and a
        location not started before it is spent fails without a connection. So the call takes at
        most min(budget_s, timeout * ceil(len(locations) / max_workers)); locations are started in
        input order, so the caller's order decides who waits. on_fetched(seconds): called once per
        location that was started, with the time its fetch took (success or failure)."""
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if not locations:
            return []
        end = None if budget_s is None else time.monotonic() + budget_s

        def one(location: str) -> bytes | StorageError:
            try:
                allowed = self.timeout if timeout is None else timeout
                if end is not None:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise StorageError(f"cannot fetch {location}: the fetch budget of {budget_s:g} s was "
                                           "spent before it started")
                    allowed = min(allowed, left)
                started = time.monotonic()
                try:
                    return self.fetch(location, max_bytes, allowed)
                finally:
                    if on_fetched is not None:
                        on_fetched(time.monotonic() - started)
            except StorageError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(max_workers, len(locations)),
                                thread_name_prefix="rollproof-fetch") as pool:
            return list(pool.map(one, locations))

    def _s3(self):
        with self._s3_lock:
            if self.s3_client is None:
                # imported here: adapters.storage imports this module for its stores' reads
                from adapters.storage import make_s3_client

                self.s3_client = make_s3_client(timeout=self.timeout)
            return self.s3_client

    def _read_file(self, location: str, parsed: urllib.parse.SplitResult, limit: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{location} names another host")
        raw = urllib.parse.unquote(parsed.path)
        if "\x00" in raw or not raw.startswith("/"):
            raise StorageError(f"{location} is not an absolute file path")
        real = Path(os.path.realpath(raw))  # follows symlinks and `..` (and does not raise on loops)
        for root in self.file_roots:
            if real == root or root in real.parents:
                return _read_beneath(root, real.relative_to(root).parts, str(real), limit, deadline)
        raise StorageError(f"{location} is outside the directories this validator reads")
