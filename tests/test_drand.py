import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from py_arkworks_bls12381 import G1Point

from adapters.beacons import BeaconCache, HttpRelaySource, LocalBeaconSource
from verification.drand import DEFAULT, PUBLIC_NETWORKS, QUICKNET, Beacon, verify_beacon
from verification.drand_local import LocalDrand
from verification.errors import BeaconError, BeaconUnavailableError

# real beacons collected from public drand sources (a copy of shared/data/drand_vectors.json)
VECTORS = json.loads((Path(__file__).resolve().parent / "data" / "drand_vectors.json").read_text())


def _vectors():
    return VECTORS


def _beacon(info, v):
    return Beacon(info.chain_hash(), v["round"], bytes.fromhex(v["signature"]),
                  bytes.fromhex(v.get("previous_signature") or ""))


def test_pinned_chain_hashes_recompute():
    data = _vectors()
    for name, info in PUBLIC_NETWORKS.items():
        net = data["networks"][name]
        assert info.chain_hash().hex() == net["chain_hash"]
        assert info.public_key.hex() == net["public_key"]
        assert info.period == net["period"] and info.genesis_time == net["genesis_time"]


@pytest.mark.parametrize("network", ["default", "quicknet"])
def test_every_vector_verifies(network):
    data = _vectors()
    info = PUBLIC_NETWORKS[network]
    vectors = data["vectors"][network]
    assert vectors
    for v in vectors:
        randomness = verify_beacon(info, _beacon(info, v), expected_round=v["round"])
        if v["randomness"]:
            assert randomness.hex() == v["randomness"]


@pytest.mark.parametrize("network", ["default", "quicknet"])
def test_forged_and_misplaced_beacons_fail(network):
    data = _vectors()
    info = PUBLIC_NETWORKS[network]
    v = data["vectors"][network][1]
    good = _beacon(info, v)
    sig = bytearray(good.signature)
    sig[-1] ^= 1
    with pytest.raises(BeaconError):
        verify_beacon(info, Beacon(good.chain_hash, good.round, bytes(sig), good.previous_signature))
    # a valid signature presented as another round
    with pytest.raises(BeaconError):
        verify_beacon(info, Beacon(good.chain_hash, good.round + 1, good.signature, good.previous_signature))
    with pytest.raises(BeaconError):
        verify_beacon(info, good, expected_round=good.round + 1)
    # another round's valid beacon served for this one
    other = data["vectors"][network][2]
    with pytest.raises(BeaconError):
        verify_beacon(info, good, expected_round=other["round"])
    # wrong chain
    wrong = DEFAULT if info is QUICKNET else QUICKNET
    with pytest.raises(BeaconError):
        verify_beacon(wrong, good)


def test_wrong_previous_signature_fails():
    data = _vectors()
    v = data["vectors"]["default"][1]
    b = _beacon(DEFAULT, v)
    prev = bytearray(b.previous_signature)
    prev[5] ^= 0x10
    with pytest.raises(BeaconError):
        verify_beacon(DEFAULT, Beacon(b.chain_hash, b.round, b.signature, bytes(prev)))
    with pytest.raises(BeaconError):
        verify_beacon(DEFAULT, Beacon(b.chain_hash, b.round, b.signature, b""))


def test_an_unchained_beacon_has_one_encoding():
    """Quicknet signs the round alone: a previous signature would be unsigned bytes riding along."""
    data = _vectors()
    b = _beacon(QUICKNET, data["vectors"]["quicknet"][0])
    assert b.previous_signature == b"" and verify_beacon(QUICKNET, b)
    with pytest.raises(BeaconError, match="no previous signature"):
        verify_beacon(QUICKNET, Beacon(b.chain_hash, b.round, b.signature, b"\1" * 96))


def _non_subgroup_g1() -> bytes:
    """A compressed point on the curve but outside the prime-order subgroup."""
    for x in range(1, 200):
        raw = bytearray(x.to_bytes(48, "big"))
        raw[0] |= 0x80
        try:
            G1Point.from_compressed_bytes_unchecked(bytes(raw))
        except ValueError:
            continue
        try:
            G1Point.from_compressed_bytes(bytes(raw))
        except ValueError:
            return bytes(raw)
    raise AssertionError("no non-subgroup point found")


def test_out_of_subgroup_signature_fails():
    bad = _non_subgroup_g1()
    with pytest.raises(BeaconError, match="decode"):
        verify_beacon(QUICKNET, Beacon(QUICKNET.chain_hash(), 5, bad))


def test_garbage_signature_fails_cleanly():
    for sig in (b"", b"\x00" * 48, b"\xff" * 48, b"\x01" * 47):
        with pytest.raises(BeaconError):
            verify_beacon(QUICKNET, Beacon(QUICKNET.chain_hash(), 5, sig))


def test_round_maths():
    assert QUICKNET.round_at(QUICKNET.genesis_time) == 1
    assert QUICKNET.round_at(QUICKNET.genesis_time + 2.9) == 1
    assert QUICKNET.round_at(QUICKNET.genesis_time + 3) == 2
    assert QUICKNET.round_at(0) == 0
    for r in (1, 2, 1000):
        assert QUICKNET.round_at(QUICKNET.time_of_round(r)) == r
    with pytest.raises(BeaconError):
        QUICKNET.time_of_round(0)


def test_local_drand_signs_verifiable_beacons():
    d = LocalDrand()
    b = d.sign(12345)
    assert verify_beacon(d.info, b, expected_round=12345) == b.randomness
    other = LocalDrand("another-seed")
    with pytest.raises(BeaconError):
        verify_beacon(other.info, b)
    assert d.info.chain_hash() == LocalDrand().info.chain_hash()


def test_local_source_refuses_future_rounds(tmp_path):
    d = LocalDrand()
    now = d.genesis_time + 300
    src = LocalBeaconSource(d, clock=lambda: now)
    current = d.info.round_at(now)
    assert src.get(current).round == current
    with pytest.raises(BeaconUnavailableError):
        src.get(current + 1)


def test_cache_keeps_only_verified(tmp_path):
    d = LocalDrand()
    cache = BeaconCache(tmp_path)
    src = LocalBeaconSource(d, clock=lambda: d.genesis_time + 300)
    b = src.get(50, cache)
    assert cache.get(d.info, 50) == b
    forged = Beacon(b.chain_hash, 51, b.signature)
    with pytest.raises(BeaconError):
        cache.put(d.info, forged)
    assert cache.get(d.info, 51) is None
    # a tampered cache file is detected on read
    path = tmp_path / d.info.chain_hash().hex() / "50.json"
    doc = json.loads(path.read_text())
    doc["round"] = 49
    path.write_text(json.dumps(doc))
    with pytest.raises(BeaconError):
        cache.get(d.info, 50)


class _Relay(BaseHTTPRequestHandler):
    beacons: dict = {}

    def do_GET(self):  # noqa: N802
        parts = self.path.strip("/").split("/")
        body = self.beacons.get(parts[-1])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body if isinstance(body, bytes) else json.dumps(body).encode())

    def log_message(self, *a):
        pass


@pytest.fixture()
def relay():
    data = _vectors()
    v = data["vectors"]["quicknet"][0]
    other = data["vectors"]["quicknet"][1]
    _Relay.beacons = {
        str(v["round"]): {"round": v["round"], "signature": v["signature"]},
        # a relay lying: serves another round's valid beacon under this round
        "999": {"round": other["round"], "signature": other["signature"]},
        # a hostile relay: 16 KiB of nesting, deep enough to crash an unguarded json parser
        "998": b"[" * 16_000,
    }
    server = HTTPServer(("127.0.0.1", 0), _Relay)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", v
    server.shutdown()


def test_http_relay_serves_verified_rounds(relay):
    url, v = relay
    src = HttpRelaySource(QUICKNET, [url], timeout=2)
    assert src.get(v["round"]).signature.hex() == v["signature"]
    assert src.url(url, 7).endswith(f"/{QUICKNET.chain_hash().hex()}/public/7")


def test_http_relay_rejects_wrong_round_and_dead_relays(relay):
    url, v = relay
    src = HttpRelaySource(QUICKNET, ["http://127.0.0.1:9", url], timeout=2)
    with pytest.raises(BeaconUnavailableError) as info:
        src.get(999)
    assert "127.0.0.1:9" in str(info.value)
    # the dead relay is skipped, the live one serves
    assert src.get(v["round"]).round == v["round"]
    with pytest.raises(BeaconUnavailableError):
        HttpRelaySource(QUICKNET, ["http://127.0.0.1:9"], timeout=1).get(1)


def test_http_relay_refuses_deeply_nested_replies(relay):
    url, _v = relay
    with pytest.raises(BeaconUnavailableError, match="nests 16000 deep"):
        HttpRelaySource(QUICKNET, [url], timeout=2).get(998)
