"""The validator fetches miners' bundles concurrently under a deadline: a miner whose server
trickles bytes forever fails fetch_failed within about one deadline, and the honest miners of the
same window are verified as usual (real HTTP server on 127.0.0.1)."""

import http.server
import threading
import time

from stalling_relay import drip_handler
from test_miner_validator import Net, keys, net  # noqa: F401 - fixtures

from adapters.fetch import Fetcher
from validator.service import Validator
from verification.commitment import encode_commitment


_Drip = drip_handler(1000, 0.5, max_bytes=600)


def test_a_stalling_miner_delays_nobody_and_fails_within_its_deadline(net, keys):  # noqa: F811
    honest, staller, vkey = keys
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        w = net.next_window()
        net.miner(honest, name="h").run_window(w)
        net.chain.commit(staller, w, encode_commitment(w, b"\x07" * 32, f"http://127.0.0.1:{server.server_port}/b.rpb"))
        net.chain.set_validator_permit(net.chain.uid_of(vkey.ss58_address))
        fetcher = Fetcher(file_roots=[net.store.root], timeout=2.0, allow_private=True)
        v = Validator(net.chain, vkey, net.lm, net.beacons, fetcher, net.tmp / "v")
        net.open(v, w)
        t = time.monotonic()
        res = v.process_window(w)
        elapsed = time.monotonic() - t
        by = {m["hotkey"]: m for m in res.report["miners"]}
        assert by[staller.ss58_address]["reason"] == "fetch_failed"
        assert "2" in by[staller.ss58_address]["detail"]  # names the deadline
        assert by[honest.ss58_address]["reason"] == "ok" and by[honest.ss58_address]["weight"] == 65535
        # the drip would take 500,000 s; the window took one deadline plus verification
        assert elapsed < 120
    finally:
        server.shutdown()
