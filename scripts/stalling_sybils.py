"""64 stalling hotkeys beside 8 honest miners, through the real validator window (issue 24 item 4).

The embedded EVM chain, the tiny model, real HTTP servers on 127.0.0.1: the honest miners
(miner.service.Miner, --groups groups each) publish to a store served over HTTP; each stalling
hotkey is registered and commits, every window, a location on a server that either drips one
byte every 0.5 s under a Content-Length just within the window's bound or accepts the connection and never answers. The
validator (validator.service.Validator with the node defaults: FETCH_WORKERS, the deadline sized
from the window's bundle bound, WINDOW_FETCH_BUDGET_S, the opening-seeded fetch order) scores each
window; the script records every honest miner's verdict, every staller's, the window's fetch time
(first fetch to last result) and the whole window's time.

The stallers' 64 commitments are sent in one block (the embedded chain otherwise mines a block per
transaction, and a window is 20 blocks); they are real transactions of registered hotkeys.

    python scripts/stalling_sybils.py [--windows 2] [--stallers 64] [--honest 8] [--groups 8]

Writes reports/stalling_sybils.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from stalling_relay import drip_handler  # noqa: E402 - tests/ on the path first


# the declared Content-Length is set within the window's bound below, so only the drip is slow
_Drip = drip_handler(1000, 0.5, max_bytes=2000)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def _serve(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Silent:
    """Accepts connections and never sends a byte (a location that stalls before its headers)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def _commit_in_one_block(chain, items) -> None:
    """Send every (keypair, window, data) commitment, then mine one block holding them all."""
    evm = chain.embedded
    evm.tester.disable_auto_mine_transactions()
    try:
        for key, window, data in items:
            acct = chain.account_for(key)
            fn = chain.registry.functions.commit(chain.uid_of(key.ss58_address), window, data)
            tx = fn.build_transaction({"from": acct.address, "chainId": chain.chain_id, "gas": 400_000,
                                       "nonce": chain.w3.eth.get_transaction_count(acct.address, "pending")})
            chain.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
        evm.mine(1)
    finally:
        evm.tester.enable_auto_mine_transactions()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--stallers", type=int, default=64)
    ap.add_argument("--honest", type=int, default=8)
    ap.add_argument("--groups", type=int, default=8, help="groups per bundle (the window's params; 8 = the base's)")
    args = ap.parse_args()

    import tempfile

    from bittensor.sp_core import Keypair

    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from adapters.fetch import Fetcher
    from adapters.storage import FileStore
    from miner.service import Miner
    from report_lib import md_table, write
    from validator import defaults as D
    from validator.service import Validator
    from verification.bundle_size import bundle_limit
    from verification.challenge import window_of_block, window_start_block
    from verification.commitment import encode_commitment
    from verification.drand_local import LocalDrand
    from verification.model import load_model

    tmp = Path(tempfile.mkdtemp(prefix="stalling-sybils-"))
    lm = load_model("tiny", "cpu")
    lm = lm.with_generation(lm.generation.with_groups(args.groups))  # every node's params: groups per bundle
    drand = LocalDrand()
    chain = EVMChain.embedded_chain(3)
    beacons = LocalBeaconSource(drand, clock=chain.now)
    store_root = tmp / "store"
    store_root.mkdir()
    files = _serve(functools.partial(_Quiet, directory=str(store_root)))

    class HttpStore(FileStore):
        def put(self, key, data):
            super().put(key, data)
            return f"http://127.0.0.1:{files.server_port}/{key}"

        def base_location(self):
            return f"http://127.0.0.1:{files.server_port}/"

    store = HttpStore(store_root)
    honest = [Keypair.create_from_uri(f"//sybil-run/honest/{i}") for i in range(args.honest)]
    stallers = [Keypair.create_from_uri(f"//sybil-run/staller/{i}") for i in range(args.stallers)]
    vkey = Keypair.create_from_uri("//sybil-run/validator")
    for k in honest + stallers + [vkey]:
        chain.register(k)
    chain.set_validator_permit(chain.uid_of(vkey.ss58_address))
    drip, silent = _serve(_Drip), _Silent()
    miners = [Miner(chain, k, lm, store, beacons, tmp / f"m{i}", ) for i, k in enumerate(honest)]
    fetcher = Fetcher(allow_private=True)  # loopback servers; every other default as a validator runs
    validator = Validator(chain, vkey, lm, beacons, fetcher, tmp / "v")
    bound = bundle_limit(lm.generation)
    _Drip.length = bound - 1  # a bundle-sized body that never arrives in time, not an oversized one

    fetch_spans: list[tuple[float, float]] = []
    real_fetch_many = fetcher.fetch_many

    def timed_fetch_many(*a, **kw):
        t = time.monotonic()
        out = real_fetch_many(*a, **kw)
        fetch_spans.append((t, time.monotonic()))
        return out

    fetcher.fetch_many = timed_fetch_many

    rows, windows = [], []
    for _ in range(args.windows):
        w = window_of_block(chain.current_block()) + 1
        chain.mine(window_start_block(w) - chain.current_block())
        items = []
        for i, k in enumerate(stallers):
            url = (f"http://127.0.0.1:{drip.server_port}/{w}/{i}.rpb" if i % 2 == 0
                   else f"http://127.0.0.1:{silent.port}/{w}/{i}.rpb")
            items.append((k, w, encode_commitment(w, hashlib.sha256(b"%d/%d" % (w, i)).digest(), url)))
        _commit_in_one_block(chain, items)
        for m in miners:
            rec = m.run_window(w)
            if rec.stage != "committed":
                print(f"window {w}: honest miner {m.hotkey[:8]} {rec.stage}: {rec.detail}", flush=True)
        while not validator.ready(w):
            chain.mine(1)
        fetch_spans.clear()
        t = time.monotonic()
        res = validator.process_window(w)
        total = time.monotonic() - t
        fetch_s = sum(b - a for a, b in fetch_spans)
        by = {m["hotkey"]: m for m in res.report["miners"]}
        honest_ok = sum(by.get(k.ss58_address, {}).get("reason") == "ok" for k in honest)
        stall_failed = sum(by.get(k.ss58_address, {}).get("reason") == "fetch_failed" for k in stallers)
        windows.append({"window": w, "honest_scored": honest_ok, "honest": args.honest, "stallers_fetch_failed":
                        stall_failed, "stallers": args.stallers, "fetch_s": fetch_s, "window_s": total})
        for k in honest + stallers:
            m = by.get(k.ss58_address, {})
            rows.append({"window": w, "hotkey": k.ss58_address, "honest": k in honest, "reason": m.get("reason"),
                         "weight": m.get("weight"), "detail": (m.get("detail") or "")[:120]})
        print(f"window {w}: {honest_ok}/{args.honest} honest scored ok, {stall_failed}/{args.stallers} stallers "
              f"fetch_failed; fetching {fetch_s:.1f} s, window {total:.1f} s", flush=True)

    deadline = min(D.fetch_deadline_s(bound), fetcher.timeout)
    all_scored = all(w["honest_scored"] == w["honest"] for w in windows)
    data = {"windows": windows, "rows": rows, "bound_bytes": bound, "deadline_s": deadline,
            "fetch_workers": D.FETCH_WORKERS, "budget_s": D.WINDOW_FETCH_BUDGET_S, "groups": args.groups,
            "all_honest_scored": all_scored}
    md = (f"# Stalling sybils: {args.stallers} stalling hotkeys beside {args.honest} honest miners\n\n"
          f"`python scripts/stalling_sybils.py --windows {args.windows} --stallers {args.stallers} --honest "
          f"{args.honest} --groups {args.groups}`: embedded EVM chain, tiny model, real HTTP servers on 127.0.0.1 "
          f"(half the stallers drip 1 byte / 0.5 s under a Content-Length just within the bound, half accept and never answer). "
          f"Validator defaults: {D.FETCH_WORKERS} fetch workers, per-location deadline {deadline:.1f} s "
          f"(= {D.FETCH_CONNECT_S:g} s + {bound:,} B bound / {D.FETCH_MIN_RATE_BYTES_S // 1024} KiB/s), "
          f"window budget {D.WINDOW_FETCH_BUDGET_S:g} s, fetch order seeded by the opening randomness.\n\n"
          + md_table(["window", "honest scored ok", "stallers fetch_failed", "fetch time s", "window time s"],
                     [[w["window"], f"{w['honest_scored']}/{w['honest']}",
                       f"{w['stallers_fetch_failed']}/{w['stallers']}", f"{w['fetch_s']:.1f}",
                       f"{w['window_s']:.1f}"] for w in windows])
          + f"\nEvery honest miner scored in every window: **{'yes' if all_scored else 'NO'}**. Before this change "
          f"(4 workers x 30 s, uid order) 64 stallers would hold the validator's fetching for "
          f"ceil(72 / 4) x 30 s = 540 s, more than a 240-s window.\n")
    jp, mp = write("stalling_sybils", data, md)
    print(f"wrote {jp} and {mp}")
    for s in (files, drip):
        s.shutdown()
    return 0 if all_scored else 1


if __name__ == "__main__":
    sys.exit(main())
