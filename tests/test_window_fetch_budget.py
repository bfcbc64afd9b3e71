"""Issue 24 items 3-4 at the validator: a window's bundles are fetched up front, many at once, in an
order fixed by the opening randomness, each within a deadline sized from the window's bundle bound
and all within one budget; junk is refused by size before parsing and only parsed bundles stay on
disk. Real HTTP servers on 127.0.0.1, the embedded chain, the tiny model."""

import hashlib
import http.server
import threading
import time

import pytest

from stalling_relay import drip_handler
from test_miner_validator import Net

from adapters.chain.base import CommitmentRecord
from adapters.fetch import Fetcher
from validator.defaults import FETCH_CONNECT_S, FETCH_MIN_RATE_BYTES_S, fetch_deadline_s
from validator.service import Validator, fetch_order
from verification.bundle_size import bundle_limit
from verification.commitment import encode_commitment
from verification.constants import BUNDLE_MAGIC, MAX_BUNDLE_BYTES
from verification.errors import StorageError


# announces a small body and sends one byte every 0.3 s: a location that never finishes
_Drip = drip_handler(4096, 0.3)


@pytest.fixture()
def drip():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_fetch_order_is_a_permutation_fixed_by_the_opening_seed():
    recs = [CommitmentRecord(uid=u, hotkey=f"h{u}", window=1, block=1, data=b"") for u in range(64)]
    a, b = fetch_order(recs, b"\x01" * 32), fetch_order(recs, b"\x02" * 32)
    assert sorted(r.uid for r in a) == list(range(64))
    assert [r.uid for r in a] != list(range(64)) and [r.uid for r in a] != [r.uid for r in b]
    assert [r.uid for r in fetch_order(list(reversed(recs)), b"\x01" * 32)] == [r.uid for r in a]  # input order plays no part


def test_the_deadline_is_sized_from_the_bound(tiny):
    bound = bundle_limit(tiny.generation)
    assert bound < 2_100_000 < MAX_BUNDLE_BYTES
    assert fetch_deadline_s(bound) == pytest.approx(FETCH_CONNECT_S + bound / FETCH_MIN_RATE_BYTES_S)
    assert fetch_deadline_s(bound) < 15  # against the flat 30 s before


def test_fetch_many_stops_at_its_budget(drip):
    fetcher = Fetcher(timeout=30, allow_private=True)
    urls = [f"{drip}/{i}" for i in range(6)]
    t = time.monotonic()
    out = fetcher.fetch_many(urls, max_workers=2, timeout=1.0, budget_s=1.6)
    elapsed = time.monotonic() - t
    assert all(isinstance(o, StorageError) for o in out)
    assert elapsed < 3.0  # not ceil(6 / 2) x 1 s, and nowhere near the 30 s ceiling
    assert sum("budget of 1.6 s was spent before it started" in str(o) for o in out) >= 2
    assert "not complete within 1 s" in str(out[0])


def _keys(n):
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//fetch-budget/{i}") for i in range(n)]


def test_honest_miners_are_scored_beside_stallers_and_junk_is_refused_unkept(tmp_path, tiny, local_drand, drip):
    honest, stallers, junk_keys, vkey = _keys(2), _keys(8)[2:8], _keys(10)[8:10], _keys(11)[10]
    net = Net(tmp_path, tiny, local_drand, honest + stallers + junk_keys + [vkey])
    w = net.next_window()
    for i, k in enumerate(honest):
        net.miner(k, name=f"h{i}").run_window(w)
    for i, k in enumerate(stallers):
        net.chain.commit(k, w, encode_commitment(w, bytes([i]) * 32, f"{drip}/s{i}.rpb"))
    # junk whose hash the miner committed: empty objects within the bound, and one byte over the bound
    bound = bundle_limit(tiny.generation)
    objects = BUNDLE_MAGIC + b"[" + b",".join([b"{}"] * ((bound - 20) // 3)) + b"]"
    oversize = BUNDLE_MAGIC + b" " * (bound + 1 - len(BUNDLE_MAGIC))
    for k, body, name in ((junk_keys[0], objects, "objects"), (junk_keys[1], oversize, "oversize")):
        path = net.store.root / f"{name}.rpb"
        path.write_bytes(body)
        net.chain.commit(k, w, encode_commitment(w, hashlib.sha256(body).digest(), path.as_uri()))
    net.chain.set_validator_permit(net.chain.uid_of(vkey.ss58_address))
    fetcher = Fetcher(file_roots=[net.store.root], timeout=2.0, allow_private=True)
    # more slots than stallers (as FETCH_WORKERS is against 256 uids), a budget of two deadlines
    v = Validator(net.chain, vkey, net.lm, net.beacons, fetcher, tmp_path / "v", fetch_workers=12,
                  fetch_budget_s=4.0)
    net.open(v, w)
    t = time.monotonic()
    res = v.process_window(w)
    elapsed = time.monotonic() - t
    by = {m["hotkey"]: m for m in res.report["miners"]}
    for k in honest:
        assert by[k.ss58_address]["reason"] == "ok" and by[k.ss58_address]["weight"] > 0
    for k in stallers:
        assert by[k.ss58_address]["reason"] == "fetch_failed", by[k.ss58_address]
    assert by[junk_keys[0].ss58_address]["reason"] == "bundle_format"
    assert "JSON objects" in by[junk_keys[0].ss58_address]["detail"]
    assert by[junk_keys[1].ss58_address]["reason"] == "bundle_too_large"
    # only the bundles that parsed are kept on disk
    kept = {p.stem for p in v.state.bundle_path(w, 0).parent.glob("*.rpb")}
    assert kept == {str(net.chain.uid_of(k.ss58_address)) for k in honest}
    # all stallers were fetched at once: one 2-s deadline, not ceil(6 / 4) of them, plus verification
    assert elapsed < 60
