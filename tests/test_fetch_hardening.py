"""The validator's fetcher against hostile locations: real servers on 127.0.0.1 (and ::1) that
drip, never end, lie about their length, compress, redirect; SSRF targets; FIFOs, symlinks and
`..` in file:// locations; concurrent fetch_many."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fetch import Fetcher, _read_beneath, embedded_ipv4, is_public_address, read_local_file
from verification.errors import StorageError

BODY = b"bundle-bytes"
TIMEOUT = 2.0  # the fetcher's whole-download budget in these tests


# ---- a local HTTP server with hostile routes ---------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        self.server.hosts.append(self.headers.get("Host"))
        self.server.accept_encodings.append(self.headers.get("Accept-Encoding"))
        first = self.path.strip("/").split("?")[0].split("/")[0]  # "/s3drip/key" is an S3 GET
        route = getattr(self, "route_" + first.replace("-", "_"), None)
        try:
            if route is None:
                self.send_error(404)
            else:
                route()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the fetcher hung up on us: that is the point of most routes

    def _head(self, status=200, length=None, **headers):
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()

    def route_ok(self):
        self._head(length=len(BODY))
        self.wfile.write(BODY)

    def route_chunked_ok(self):
        self._head(Transfer_Encoding="chunked")
        for piece in (b"bundle", b"-", b"bytes"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def route_drip(self):  # 100 bytes at 1 byte per 0.5 s: 50 s if nobody hangs up
        self._head(length=100)
        for _ in range(100):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.5)

    route_s3drip = route_drip  # GET /s3drip/key: an S3 endpoint dripping the object

    def route_drip_headers(self):  # the status line itself, 1 byte per 0.5 s
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n":
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.5)

    def route_endless_chunked(self):
        self._head(Transfer_Encoding="chunked")
        piece = b"z" * 65536
        while True:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))

    def route_endless_close(self):  # no length, no chunking: a body that ends when the connection does
        self.close_connection = True
        self._head(Connection="close")
        while True:
            self.wfile.write(b"z" * 65536)

    def route_length_lie_more(self):
        self._head(length=100)
        self.wfile.write(b"a" * 100 + b"b" * 10_000)

    def route_length_lie_less(self):
        self.close_connection = True
        self._head(length=100)
        self.wfile.write(b"a" * 50)

    def route_length_over_cap(self):
        self._head(length=10**12)
        self.wfile.write(b"a" * 1000)

    def route_length_bad(self):
        self._head(Content_Length="12, 13")
        self.wfile.write(BODY)

    def route_gzip(self):  # 16 MiB of zeros in ~16 KiB
        bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
        self._head(length=len(bomb), Content_Encoding="gzip")
        self.wfile.write(bomb)

    def route_te_gzip(self):  # a compressed transfer coding instead of a content coding
        self.close_connection = True
        self._head(Transfer_Encoding="gzip, chunked", Connection="close")
        self.wfile.write(gzip.compress(b"\0" * 65536))

    def route_identity(self):
        self._head(length=len(BODY), Content_Encoding="identity")
        self.wfile.write(BODY)

    def route_redirect(self):
        self._head(302, length=0, Location=self.server.redirect_to)

    def route_slow(self):
        # passes the barrier only while all the slow requests are in flight at once: proof that
        # fetch_many runs them concurrently, independent of timing
        try:
            self.server.barrier.wait()
        except threading.BrokenBarrierError:
            self._head(500, length=0)
            return
        time.sleep(0.5)
        self._head(length=len(self.path))
        self.wfile.write(self.path.encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host="127.0.0.1", family=socket.AF_INET, tls: ssl.SSLContext | None = None):
        self.address_family = family
        super().__init__((host, 0), _Handler)
        self.tls = tls
        self.hits: list[str] = []
        self.hosts: list[str | None] = []
        self.accept_encodings: list[str | None] = []
        self.redirect_to = ""
        self.barrier = threading.Barrier(3, timeout=5)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get_request(self):
        conn, addr = super().get_request()
        if self.tls is not None:
            conn.settimeout(5)
        return conn, addr

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/{path}"

    def stop(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.stop()


@pytest.fixture
def other_server():
    srv = _Server()
    yield srv
    srv.stop()


def local(**kw) -> Fetcher:
    """A fetcher allowed to reach the test servers on loopback."""
    kw.setdefault("timeout", TIMEOUT)
    return Fetcher(allow_private=True, **kw)


def timed_failure(fetcher: Fetcher, url: str, match: str) -> float:
    start = time.monotonic()
    with pytest.raises(StorageError, match=match):
        fetcher.fetch(url)
    return time.monotonic() - start


# ---- http: deadline, size cap, length, encoding, redirects ---------------------------------------

def test_plain_and_chunked_bodies_are_fetched(server):
    assert local().fetch(server.url("ok")) == BODY
    assert local().fetch(server.url("chunked-ok")) == BODY
    assert local().fetch(server.url("identity")) == BODY
    assert server.accept_encodings[0] == "identity"


def test_slow_drip_body_fails_within_the_total_deadline(server):
    # the drip would take 50 s and never pauses longer than 0.5 s: a per-read timeout never fires
    elapsed = timed_failure(local(), server.url("drip"), "not complete within 2 s")
    assert elapsed < 3 * TIMEOUT


def test_slow_drip_headers_fail_within_the_total_deadline(server):
    elapsed = timed_failure(local(), server.url("drip-headers"), "not complete within 2 s")
    assert elapsed < 3 * TIMEOUT


def test_endless_bodies_stop_at_the_cap(server):
    fetcher = local(max_bytes=1024 * 1024, timeout=30)
    with pytest.raises(StorageError, match="larger than 1048576 bytes"):
        fetcher.fetch(server.url("endless-chunked"))
    with pytest.raises(StorageError, match="larger than 1048576 bytes"):
        fetcher.fetch(server.url("endless-close"))
    with pytest.raises(StorageError, match="larger than 5 bytes"):
        local().fetch(server.url("chunked-ok"), max_bytes=5)


def test_content_length_lies(server):
    # more bytes than declared: the declared length is the body; the rest is never read
    assert local().fetch(server.url("length-lie-more")) == b"a" * 100
    # fewer bytes than declared, then the connection closes: an error, never the 50 bytes
    with pytest.raises(StorageError, match="ended after 50 of 100 bytes"):
        local().fetch(server.url("length-lie-less"))
    # a declared length over the cap is refused before the body is read
    with pytest.raises(StorageError, match="is 1000000000000 bytes, larger than the limit"):
        local(max_bytes=4096).fetch(server.url("length-over-cap"))
    with pytest.raises(StorageError, match="larger than the limit of 11 bytes"):
        local().fetch(server.url("ok"), max_bytes=11)
    with pytest.raises(StorageError, match="invalid Content-Length"):
        local().fetch(server.url("length-bad"))


def test_compressed_bodies_are_refused_not_decompressed(server):
    with pytest.raises(StorageError, match="Content-Encoding 'gzip' refused"):
        local(max_bytes=1024 * 1024).fetch(server.url("gzip"))
    with pytest.raises(StorageError, match="Transfer-Encoding 'gzip, chunked' refused"):
        local(max_bytes=1024 * 1024).fetch(server.url("te-gzip"))


def test_redirects_are_refused_and_never_followed(server, other_server):
    server.redirect_to = other_server.url("ok")
    with pytest.raises(StorageError, match="HTTP 302 redirect to .* not followed"):
        local().fetch(server.url("redirect"))
    assert server.hits == ["/redirect"] and other_server.hits == []


def test_error_status_is_a_storage_error(server):
    with pytest.raises(StorageError, match="HTTP 404"):
        local().fetch(server.url("missing"))


def test_a_silent_server_fails_within_the_deadline():
    # accepts the TCP connection and never answers (neither HTTP nor a TLS handshake)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        for scheme in ("http", "https"):
            elapsed = timed_failure(local(), f"{scheme}://127.0.0.1:{port}/x", "not complete within 2 s")
            assert elapsed < 3 * TIMEOUT
    finally:
        listener.close()


def _s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    # placeholder keys: the local endpoint does not check signatures
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=30, read_timeout=30))


def test_s3_body_drip_fails_within_the_total_deadline(server):
    # the endpoint's 30 s read timeout never fires on a 0.5 s drip; the fetch's budget does
    client = _s3_client(f"http://127.0.0.1:{server.port}")
    fetcher = Fetcher(s3_client=client, timeout=TIMEOUT)
    elapsed = timed_failure(fetcher, "s3://s3drip/bundle.rpb", "not complete within 2 s")
    assert elapsed < 3 * TIMEOUT
    assert server.hits and server.hits[0].startswith("/s3drip/bundle.rpb")


# ---- SSRF and DNS rebinding ---------------------------------------------------------------------

def test_non_public_targets_are_refused_before_connecting(server):
    port = server.port
    targets = [
        f"http://127.0.0.1:{port}/ok", f"http://127.8.9.10:{port}/ok", f"http://localhost:{port}/ok",
        f"http://[::1]:{port}/ok", f"http://[::ffff:127.0.0.1]:{port}/ok", f"http://0.0.0.0:{port}/ok",
        f"http://[::]:{port}/ok", f"http://[2002:7f00:1::1]:{port}/ok", f"http://[64:ff9b::7f00:1]:{port}/ok",
        f"http://2130706433:{port}/ok",  # 127.0.0.1 written as one decimal number
        "http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://10.0.0.1/x", "http://172.16.0.1/x", "http://192.168.1.1/x", "http://100.64.0.1/x",
        "http://224.0.0.1/x", "http://255.255.255.255/x", "http://[fe80::1]/x", "http://[fd00::1]/x",
        "http://[ff02::1]/x", "https://10.0.0.1/x",
    ]
    for url in targets:
        with pytest.raises(StorageError, match="not a public address"):
            Fetcher(timeout=TIMEOUT).fetch(url)
    assert server.hits == []  # loopback forms: nothing ever connected to the server
    # the same server is reachable when private addresses are allowed (a local test network)
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        assert local().fetch(server.url("ok", host)) == BODY


def test_ipv6_loopback_server_refused_then_allowed():
    try:
        srv = _Server("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        with pytest.raises(StorageError, match="not a public address"):
            Fetcher(timeout=TIMEOUT).fetch(srv.url("ok", "[::1]"))
        assert srv.hits == []
        assert local().fetch(srv.url("ok", "[::1]")) == BODY
    finally:
        srv.stop()


def test_credentials_in_a_location_are_refused(server):
    with pytest.raises(StorageError, match="credentials"):
        local().fetch(f"http://user:pw@127.0.0.1:{server.port}/ok")
    assert server.hits == []


class _FakeDNS:
    """Answers for names under .test (there is no DNS server in a test); everything else is real."""

    def __init__(self, monkeypatch, answers):
        self.answers, self.calls, self._real = answers, [], socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):
            self.calls.append(host)
            ips = self.answers[min(len(self.calls), len(self.answers)) - 1]
            return [info for ip in ips for info in self._real(ip, port, *args, **kwargs)]
        return self._real(host, port, *args, **kwargs)


def test_name_is_resolved_once_and_the_checked_address_is_the_one_connected(server, monkeypatch):
    # a rebinding resolver: the first answer is the server, any later one an unroutable address
    dns = _FakeDNS(monkeypatch, [["127.0.0.1"], ["192.0.2.1"]])
    assert local().fetch(f"http://rebind.test:{server.port}/ok") == BODY
    assert dns.calls == ["rebind.test"]
    assert server.hosts == [f"rebind.test:{server.port}"]  # the Host header names the host, not the IP


def test_a_name_with_any_private_answer_is_refused(server, monkeypatch):
    _FakeDNS(monkeypatch, [["8.8.8.8", "127.0.0.1"]])
    with pytest.raises(StorageError, match=r"mixed\.test resolves to 127\.0\.0\.1, which is not a public address"):
        Fetcher(timeout=TIMEOUT).fetch(f"http://mixed.test:{server.port}/ok")
    assert server.hits == []


# ---- https: certificate checked against the host name, SNI sent --------------------------------

def _tls_material(tmp_path, names):
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rollproof test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server_ctx, client_ctx


def test_https_checks_the_certificate_against_the_host_name(tmp_path, monkeypatch):
    server_ctx, client_ctx = _tls_material(tmp_path, ["bundles.test"])
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    srv = _Server(tls=server_ctx)
    try:
        _FakeDNS(monkeypatch, [["127.0.0.1"]])
        assert local(ssl_context=client_ctx).fetch(srv.url("ok", "bundles.test")) == BODY
        assert sni == ["bundles.test"]
        # the same server under a name its certificate does not carry, or without the CA: refused
        with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            local(ssl_context=client_ctx).fetch(srv.url("ok", "other.test"))
        with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            local().fetch(srv.url("ok", "bundles.test"))
        assert srv.hits == ["/ok"]
    finally:
        srv.stop()


# ---- the address classifier ----------------------------------------------------------------------

REFUSED_V4 = [IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/29", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")]
REFUSED_V6 = [IPv6Network(n) for n in (
    "::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "3fff::/20",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")]
PUBLIC_V4 = [IPv4Network(n) for n in ("1.0.0.0/8", "8.8.8.0/24", "93.184.0.0/16", "151.101.0.0/16")]
PUBLIC_V6 = [IPv6Network(n) for n in ("2606:4700::/32", "2a00:1450::/32", "2001:4860::/32")]
NAT64 = IPv6Network("64:ff9b::/96")


def _in(nets):
    return st.sampled_from(nets).flatmap(lambda n: st.integers(0, n.num_addresses - 1).map(lambda k: n[k]))


V4 = st.one_of(st.integers(0, 2**32 - 1).map(IPv4Address), _in(REFUSED_V4), _in(PUBLIC_V4))


def _wrapped(v4: IPv4Address, form: str, low: int) -> IPv6Address:
    if form == "mapped":
        return IPv6Address(0xFFFF << 32 | int(v4))
    if form == "6to4":
        return IPv6Address(0x2002 << 112 | int(v4) << 80 | (low & (2**80 - 1)))
    return IPv6Address(int(NAT64.network_address) | int(v4))


WRAPPED = st.builds(_wrapped, V4, st.sampled_from(["mapped", "6to4", "nat64"]), st.integers(0, 2**80 - 1))
V6 = st.one_of(st.integers(0, 2**128 - 1).map(IPv6Address), _in(REFUSED_V6), _in(PUBLIC_V6), WRAPPED)


def expected_public(ip) -> bool:
    """The policy written from ipaddress's flags (a second formulation of is_public_address)."""
    if ip.version == 6:
        inner = ip.ipv4_mapped or ip.sixtofour or (IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)
        if inner is not None:
            return expected_public(inner)
        return (ip.is_global and not ip.is_multicast and not ip.is_site_local and not ip.is_reserved
                and ip.teredo is None and ip not in IPv6Network("3fff::/20"))
    return ip.is_global and not ip.is_multicast


@settings(max_examples=2000, deadline=None)
@given(st.one_of(V4, V6))
def test_classifier_agrees_with_ipaddress(ip):
    assert is_public_address(ip) == expected_public(ip)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_in(REFUSED_V4), _in(REFUSED_V6)))
def test_every_address_in_a_refused_range_is_refused(ip):
    assert not is_public_address(ip)


@settings(max_examples=500, deadline=None)
@given(V4, st.integers(0, 2**80 - 1))
def test_embedded_forms_are_judged_as_the_ipv4_address(v4, low):
    for form in ("mapped", "6to4", "nat64"):
        v6 = _wrapped(v4, form, low)
        assert embedded_ipv4(v6) == v4
        assert is_public_address(v6) == is_public_address(v4)


def test_classifier_examples():
    for a in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"):
        assert is_public_address(ipaddress.ip_address(a)), a
    for a in ("127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1",
              "::ffff:10.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "fe80::1%1",
              "fd12:3456::1", "ff0e::1", "224.0.0.1", "::127.0.0.1"):
        assert not is_public_address(ipaddress.ip_address(a)), a


# ---- file:// --------------------------------------------------------------------------------------

def _run_bounded(fn, seconds=10.0):
    """fn() in a thread; its result or exception, or a failure if it is still blocked after seconds."""
    box = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(seconds)
    return t.is_alive(), box


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "ok.rpb").write_bytes(BODY)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    return r


def _unblock_fifo(path):
    # a reader blocked in open() on a FIFO returns once a writer opens it
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_fifo_inside_the_root_is_refused_without_hanging(root):
    fifo = root / "pipe.rpb"
    os.mkfifo(fifo)
    try:
        for fn in (lambda: Fetcher(file_roots=[root]).fetch(fifo.as_uri()),
                   lambda: read_local_file(fifo)):
            hung, box = _run_bounded(fn)
            assert not hung, "reading a FIFO blocked"
            assert isinstance(box.get("error"), StorageError) and "not a regular file" in str(box["error"])
    finally:
        _unblock_fifo(fifo)


def test_rollproof_verify_on_a_fifo_exits_with_an_error(root):
    from typer.testing import CliRunner

    from rollproof.cli import app

    fifo = root / "pipe.rpb"
    os.mkfifo(fifo)
    try:
        hung, box = _run_bounded(lambda: CliRunner().invoke(app, ["verify", str(fifo), "--model", "tiny"]), 60)
        assert not hung, "rollproof verify blocked on a FIFO"
        result = box["value"]
        assert result.exit_code == 2 and "not a regular file" in result.output
    finally:
        _unblock_fifo(fifo)


def test_devices_sockets_and_directories_are_refused(root, tmp_path):
    fetcher = Fetcher(file_roots=[root, "/dev"])
    for location in ("file:///dev/zero", "file:///dev/null", (root / "sub").as_uri(), root.as_uri()):
        hung, box = _run_bounded(lambda: fetcher.fetch(location))
        assert not hung and "not a regular file" in str(box.get("error")), location
    for path in ("/dev/zero", root / "sub"):
        with pytest.raises(StorageError, match="not a regular file"):
            read_local_file(path)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock.rpb"))
        with pytest.raises(StorageError, match="not a regular file"):
            fetcher.fetch((root / "sock.rpb").as_uri())
    finally:
        sock.close()


def test_symlinks_and_dotdot_do_not_escape_the_root(root, tmp_path):
    fetcher = Fetcher(file_roots=[root])
    (root / "link.rpb").symlink_to(tmp_path / "outside" / "secret")
    (root / "sub" / "dirlink").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    for location in ((root / "link.rpb").as_uri(), (root / "sub" / "dirlink" / "secret").as_uri(),
                     f"file://{root}/../outside/secret", f"file://{root}/sub/%2e%2e/%2e%2e/outside/secret"):
        with pytest.raises(StorageError, match="outside the directories"):
            fetcher.fetch(location)
    with pytest.raises(StorageError, match="not a regular file"):  # a symlink loop stays a symlink
        fetcher.fetch((root / "loop").as_uri())
    with pytest.raises(StorageError, match="another host"):
        fetcher.fetch(f"file://evil.example{root}/ok.rpb")
    # inside the root, both are fine
    (root / "sub" / "inner.rpb").symlink_to(root / "ok.rpb")
    assert fetcher.fetch((root / "sub" / "inner.rpb").as_uri()) == BODY
    assert fetcher.fetch(f"file://{root}/sub/../ok.rpb") == BODY


def test_a_symlink_swapped_in_after_resolution_is_not_followed(root, tmp_path):
    # what the O_NOFOLLOW walk guards against: the path was checked, then a component became a link
    (root / "swapped").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(StorageError, match="cannot read"):
        _read_beneath(root, ("swapped", "secret"), "swapped/secret", 100, time.monotonic() + 5)
    (root / "leaf").symlink_to(tmp_path / "outside" / "secret")
    with pytest.raises(StorageError, match="not a regular file"):
        _read_beneath(root, ("leaf",), "leaf", 100, time.monotonic() + 5)


def test_oversized_local_files_are_refused(root):
    (root / "big.rpb").write_bytes(b"x" * 101)
    with pytest.raises(StorageError, match="larger than 100 bytes"):
        Fetcher(file_roots=[root], max_bytes=100).fetch((root / "big.rpb").as_uri())
    with pytest.raises(StorageError, match="larger than 100 bytes"):
        read_local_file(root / "big.rpb", 100)
    assert read_local_file(root / "big.rpb", 101) == b"x" * 101


# ---- fetch_many ------------------------------------------------------------------------------------

def test_fetch_many_is_concurrent_ordered_and_keeps_errors_in_place(server, root):
    locations = [server.url("slow?a"), (root / "ok.rpb").as_uri(), server.url("slow?b"),
                 server.url("missing"), server.url("slow?c"), "gopher://x/y"]
    start = time.monotonic()
    out = local(file_roots=[root], timeout=10).fetch_many(locations, max_workers=4)
    elapsed = time.monotonic() - start
    # each slow route passes its barrier only while all three are in flight together
    assert out[0] == b"/slow?a" and out[2] == b"/slow?b" and out[4] == b"/slow?c"
    assert out[1] == BODY
    assert isinstance(out[3], StorageError) and "HTTP 404" in str(out[3])
    assert isinstance(out[5], StorageError) and "unsupported" in str(out[5])
    assert elapsed < 3 * 0.5 + 5  # loosely: far less than three sequential slow fetches plus barrier waits
    assert local().fetch_many([]) == []
    with pytest.raises(ValueError):
        local().fetch_many(locations, max_workers=0)
