"""The node's telemetry server (adapters/telemetry_http.py) over real sockets: /metrics parses with
prometheus_client's own text parser, the page and /healthz answer, anything but GET/HEAD is 405, a
page that raises is a 500 that never stops the server, floods, silent, trickling and non-reading
clients never keep /metrics from answering, and every address it cannot listen on is one
TelemetryBindError naming the host or the port. Bounds are generous (the machine is shared): they
catch a hang or a held worker, not a slow render."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

import adapters.telemetry_http as th
from adapters.telemetry import NodeMetrics, metrics_of
from adapters.telemetry_http import TelemetryServer
from rollproof.telemetry import PageSlot, start_telemetry
from verification.errors import RollproofError, TelemetryBindError

ANSWER_BOUND_S = 5.0  # /metrics must answer within this while the server is under attack
PAGE = b"<!doctype html><html><body><table><tr><td>window 7</td></tr></table></body></html>"


def registry_with_values() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    node = metrics_of(NodeMetrics, registry)
    node.window.labels(role="miner").set(7)
    node.dependency_failures.labels(role="miner", dependency="chain").inc(3)
    node.checkpoint_replay_seconds.labels(role="validator").observe(1.5)
    return registry


@pytest.fixture
def server():
    s = TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=lambda: PAGE)
    yield s
    s.close()


def get(url: str, method: str = "GET", data: bytes | None = None, timeout: float = ANSWER_BOUND_S):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_with_the_prometheus_text_parser(server):
    status, headers, body = get(server.url + "metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    values = samples(body.decode())
    assert values[("rollproof_window", (("role", "miner"),))] == 7
    assert values[("rollproof_dependency_failures_total", (("dependency", "chain"), ("role", "miner")))] == 3
    assert values[("rollproof_checkpoint_replay_seconds_count", (("role", "validator"),))] == 1
    # a query string (as some scrapers send) is the same path
    assert samples(get(server.url + "metrics?x=1")[2].decode()) == values


def test_values_move_between_scrapes():
    registry = CollectorRegistry(auto_describe=True)
    counter = Counter("rollproof_test_things", "things", registry=registry)
    with TelemetryServer("127.0.0.1", 0, registry=registry, render_interval_s=0) as s:
        before = samples(get(s.url + "metrics")[2].decode())[("rollproof_test_things_total", ())]
        counter.inc(5)
        after = samples(get(s.url + "metrics")[2].decode())[("rollproof_test_things_total", ())]
    assert (before, after) == (0, 5)


def test_requests_within_the_render_interval_share_one_render():
    calls = []

    def page() -> bytes:
        calls.append(time.monotonic())
        return PAGE

    with TelemetryServer("127.0.0.1", 0, page=page, render_interval_s=0.5) as s:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.6:
            assert get(s.url)[2] == PAGE
        elapsed = time.monotonic() - t0
    assert 2 <= len(calls) <= elapsed / 0.5 + 1, (len(calls), elapsed)
    assert all(b - a >= 0.5 for a, b in zip(calls, calls[1:]))


def test_a_page_that_hangs_holds_one_worker_and_metrics_keep_answering():
    release = threading.Event()

    def hanging() -> bytes:
        release.wait(30)
        return PAGE

    with TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=hanging) as s:
        stuck = socket.create_connection(("127.0.0.1", s.port))
        stuck.sendall(b"GET / HTTP/1.1\r\n\r\n")
        try:
            time.sleep(0.2)
            for _ in range(3):
                assert get(s.url)[0] == 503  # no answer yet to share, and no second render of the page
                assert scrape_within_bound(s.url) < ANSWER_BOUND_S
        finally:
            release.set()
            stuck.settimeout(ANSWER_BOUND_S)
            assert stuck.recv(65536).startswith(b"HTTP/1.1 200 ")
            stuck.close()


def test_head_answers_the_headers_without_the_body(server):
    full = get(server.url + "metrics")
    status, headers, body = get(server.url + "metrics", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(full[2])


def test_the_page_and_healthz(server):
    status, headers, body = get(server.url)
    assert (status, body) == (200, PAGE)
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]  # no script can run on it
    assert get(server.url + "healthz")[:3:2] == (200, b"ok\n")
    assert get(server.url + "nothing-here")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_anything_but_get_and_head_is_405(server, method):
    data = b"x" * 200_000 if method in ("POST", "PUT") else None  # a body it must not read
    status, headers, _ = get(server.url + "metrics", method=method, data=data)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert get(server.url + "metrics")[0] == 200


def test_a_page_that_raises_is_a_500_logged_once_and_the_server_keeps_serving(caplog):
    def broken() -> bytes:
        raise RuntimeError("cannot read /root/secret/journal.json")

    with caplog.at_level(logging.WARNING, logger="adapters.telemetry_http"):
        with TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=broken) as s:
            answers = [get(s.url) for _ in range(3)]
            metrics = get(s.url + "metrics")
            healthz = get(s.url + "healthz")
    for status, _, body in answers:
        assert status == 500
        assert body.count(b"\n") == 1 and b"secret" not in body  # one line; the detail stays in the log
    assert metrics[0] == 200 and healthz[0] == 200
    logged = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]


def test_a_page_returning_text_instead_of_bytes_is_a_500():
    with TelemetryServer("127.0.0.1", 0, page=lambda: "<html>") as s:
        assert get(s.url)[0] == 500
        assert get(s.url + "metrics")[0] == 404  # no registry on this server


def raw(port: int, data: bytes, timeout: float = ANSWER_BOUND_S) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_an_oversized_head_is_431_and_a_malformed_request_line_400(server):
    big = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * (th.MAX_HEAD_BYTES + 100) + b"\r\n\r\n"
    assert raw(server.port, big).startswith(b"HTTP/1.1 431 ")
    assert raw(server.port, b"HELLO\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(server.port, b"GET /metrics SMTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def scrape_within_bound(url: str) -> float:
    """Seconds until /metrics answers 200 (a 503 is answered at once: the scraper retries)."""
    t0 = time.monotonic()
    while True:
        left = ANSWER_BOUND_S - (time.monotonic() - t0)
        assert left > 0, "/metrics did not answer within the bound"
        status = get(url + "metrics", timeout=left)[0]
        if status == 200:
            return time.monotonic() - t0
        assert status == 503, status
        time.sleep(0.05)


def test_silent_trickling_and_non_reading_clients_hold_no_worker(monkeypatch):
    monkeypatch.setattr(th, "HEAD_TIMEOUT_S", 1.5)
    monkeypatch.setattr(th, "WRITE_TIMEOUT_S", 1.5)
    big_page = b"<html>" + b"x" * (32 << 20) + b"</html>"  # far beyond any socket buffer
    with TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=lambda: big_page,
                         workers=1, queue_size=1) as s:
        silent = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(10)]
        non_readers = []
        for _ in range(3):  # ask for the big page, then never read it
            c = socket.create_connection(("127.0.0.1", s.port))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            non_readers.append(c)
        trickling = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(5)]
        stop = threading.Event()

        def trickle():
            msg = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000
            for i in range(len(msg)):
                if stop.is_set():
                    return
                for c in trickling:
                    try:
                        c.send(msg[i:i + 1])
                    except OSError:
                        pass
                time.sleep(0.1)

        threading.Thread(target=trickle, daemon=True).start()
        try:
            time.sleep(0.3)
            for _ in range(5):  # with one worker, and every kind of slow client connected
                assert scrape_within_bound(s.url) < ANSWER_BOUND_S
            # every slow client is cut off at its deadline: a head that never ends, an answer never read
            deadline = time.monotonic() + 1.5 + ANSWER_BOUND_S
            for c in silent + trickling:
                c.settimeout(max(0.1, deadline - time.monotonic()))
                assert recv_until_closed(c), "a slow client was not cut off at its deadline"
        finally:
            stop.set()
            for c in silent + trickling + non_readers:
                c.close()
        assert scrape_within_bound(s.url) < ANSWER_BOUND_S


def recv_until_closed(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset), False on the socket's timeout."""
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_more_connections_than_slots_drop_the_oldest_silent_one():
    with TelemetryServer("127.0.0.1", 0, registry=registry_with_values()) as s:
        silent = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(th.MAX_CONNECTIONS + 20)]
        try:
            assert scrape_within_bound(s.url) < ANSWER_BOUND_S
            silent[0].settimeout(1.0)  # well before its head deadline (HEAD_TIMEOUT_S)
            assert recv_until_closed(silent[0])  # the oldest was dropped to make room
            silent[-1].settimeout(0.2)
            assert not recv_until_closed(silent[-1])  # the newest still waits for its head
        finally:
            for c in silent:
                c.close()


def test_a_flood_of_requests_is_answered_or_refused_at_once_and_metrics_keep_answering():
    def slow_page() -> bytes:
        time.sleep(0.02)
        return PAGE

    with TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=slow_page) as s:
        def one(i: int) -> int:
            try:
                return get(s.url if i % 2 else s.url + "metrics", timeout=ANSWER_BOUND_S)[0]
            except (OSError, http.client.HTTPException) as exc:  # a hang shows as a timeout here
                return -1 if not isinstance(exc, TimeoutError) else -2

        with ThreadPoolExecutor(max_workers=16) as pool:
            flood = pool.map(one, range(400))
            probes = [scrape_within_bound(s.url) for _ in range(5)]
            statuses = list(flood)
    assert all(p < ANSWER_BOUND_S for p in probes)
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) > 0


def test_close_stops_every_thread_and_the_port():
    before = threading.active_count()
    s = TelemetryServer("127.0.0.1", 0, registry=registry_with_values(), page=lambda: PAGE)
    assert threading.active_count() > before
    s.close()
    assert threading.active_count() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    s.close()  # twice is harmless


# ---- binding ---------------------------------------------------------------------------------------
def bind_error(host: str, port: int) -> TelemetryBindError:
    before = threading.active_count()
    with pytest.raises(TelemetryBindError) as info:
        TelemetryServer(host, port, registry=registry_with_values())
    assert threading.active_count() == before  # nothing started
    assert isinstance(info.value, RollproofError) and info.value.code == "telemetry_bind"
    assert "\n" not in str(info.value)
    return info.value


def test_a_port_in_use_is_refused():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        exc = bind_error("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    assert exc.part == "port" and "in use" in str(exc)


def test_a_port_another_server_listens_on_every_interface_is_refused():
    with TelemetryServer("0.0.0.0", 0, registry=registry_with_values()) as s:
        exc = bind_error("127.0.0.1", s.port)
    assert exc.part == "port" and "in use" in str(exc)


def test_an_address_this_machine_does_not_have_is_refused():
    exc = bind_error("203.0.113.1", 0)  # TEST-NET-3: on no machine
    assert exc.part == "host" and "not an address of this machine" in str(exc)


@pytest.mark.parametrize("host", ["no-such-host.invalid", "999.1.1.1", " "])
def test_a_host_that_does_not_resolve_is_refused(host):
    exc = bind_error(host, 0)
    assert exc.part == "host"


@pytest.mark.parametrize("port", [-1, 65536, True])
def test_a_port_out_of_range_is_refused(port):
    assert bind_error("127.0.0.1", port).part == "port"


def unprivileged_port_start() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read())
    except OSError:
        return 1024


def test_a_privileged_port_is_refused_to_a_user_who_may_not_bind_it():
    """The tests run as root here: the effective uid drops to nobody's for the bind (capabilities go
    with it, as for any non-root user) and comes back."""
    if unprivileged_port_start() <= 80:
        pytest.skip("this kernel lets every user bind port 80 (net.ipv4.ip_unprivileged_port_start)")
    import encodings.idna  # noqa: F401 - imported before the uid drops (nobody cannot read the stdlib here)

    if os.geteuid() == 0:
        os.seteuid(65534)
        try:
            with pytest.raises(TelemetryBindError) as info:
                TelemetryServer("127.0.0.1", 80, registry=registry_with_values())
        finally:
            os.seteuid(0)
        exc = info.value
    else:
        exc = bind_error("127.0.0.1", 80)
    assert exc.part == "port" and "privileged" in str(exc)


def test_localhost_and_ipv6_loopback_are_served():
    for host in ("localhost", "::1"):
        try:
            s = TelemetryServer(host, 0, registry=registry_with_values())
        except TelemetryBindError as exc:  # a machine without IPv6 loopback
            assert host == "::1" and "not an address" in str(exc)
            continue
        with s:
            assert get(s.url + "healthz")[0] == 200


# ---- the CLI's glue (rollproof/telemetry.py) -----------------------------------------------------
def test_start_telemetry_serves_the_page_on_the_metrics_port_or_its_own():
    t = start_telemetry("miner", "127.0.0.1", 0, None)
    try:
        (only,) = t.servers
        assert b"starting" in get(only.url)[2]
        t.page.set(lambda: PAGE)
        deadline = time.monotonic() + th.RENDER_INTERVAL_S + ANSWER_BOUND_S
        while get(only.url)[2] != PAGE:  # the next render, one render interval later at most
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert get(only.url + "metrics")[0] == 200
        assert f"metrics at {only.url}metrics and status page at {only.url}" in t.where()
    finally:
        t.close()
    t = start_telemetry("validator", "127.0.0.1", 0, 0)
    try:
        metrics, page = t.servers
        assert get(metrics.url)[0] == 404 and get(metrics.url + "metrics")[0] == 200
        assert get(page.url)[0] == 200 and get(page.url + "metrics")[0] == 404
    finally:
        t.close()
    assert start_telemetry("trainer", "127.0.0.1", None, None).where() is None


def test_start_telemetry_closes_the_first_server_when_the_second_cannot_bind():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    before = threading.active_count()
    try:
        with pytest.raises(TelemetryBindError) as info:
            start_telemetry("miner", "127.0.0.1", 0, port)
    finally:
        taken.close()
    assert (info.value.part, info.value.port) == ("port", port)
    assert threading.active_count() == before  # the metrics server bound first is closed again


def test_a_page_slot_renders_whatever_page_is_set_last():
    slot = PageSlot(lambda: b"a")
    assert slot() == b"a"
    slot.set(lambda: b"b")
    assert slot() == b"b"

