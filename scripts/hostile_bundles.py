"""What a hostile bundle costs a validator, beside an honest one, in one run (issue 24 item 3).

Each case runs in a fresh Python process (so one case's memory cannot hide another's): the body is
built first, then the validator's path up to the Verifier runs on it - SHA-256 of the file (the
committed-hash check), then decode_bundle under the window's bound (the base generation params,
at most MAX_GROUPS_PER_BUNDLE groups) - first timed (process CPU seconds, best of --repeats), then
once more under tracemalloc (peak Python allocation). The peak resident size (VmHWM, reset after the body is built)
minus the resident size before the path ran gives the memory the process really touched.

Cases: two honest bundles (8 groups as a miner sends today; 256 groups at the longest prompts and
completions, the largest honest bundle of the base params), and hostile bodies at the largest
size the window's bound lets through: empty objects `[{},{},...]`, empty arrays, flat zeros, empty
strings, one huge string, `\\u0100` escapes, deep nesting, one long number, many keys, and a
bundle of honest shape that fails only at its last byte (the most parsing a hostile file can buy).
The `*_64mib` cases are 64 MiB bodies decoded without a window bound (MAX_BUNDLE_BYTES only, as
the trainer's reader does), showing the pre-parse scan alone; the issue measured
`empty_objects_64mib` at 5.45 CPU-s and 1.62 GiB before the scan. `oversize` is one byte over the
bound (refused by its length; a validator refuses it at the fetch, without reading it).

    python scripts/hostile_bundles.py [--repeats 3]

Writes reports/hostile_bundles.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = ["honest_8", "honest_256", "empty_objects", "empty_arrays", "flat_zeros", "empty_strings", "huge_string",
         "escaped_string", "deep_nesting", "long_number", "many_keys", "honest_shape_bad_tail", "oversize",
         "empty_objects_64mib", "flat_zeros_64mib", "huge_string_64mib"]
HONEST_REFERENCE = "honest_256"


def _honest(n_groups: int, prompt_tokens: int, rng) -> bytes:
    import numpy as np

    from verification.bundle import BeaconModel, Bundle, Group, Header, Rollout, encode_bundle, rows_root
    from verification.constants import BASE_GENERATION, PROTOCOL_VERSION, SKETCH_DIM

    s, t = BASE_GENERATION["group_size"], BASE_GENERATION["max_new_tokens"]
    groups = []
    for gi in range(n_groups):
        rollouts = [Rollout(r, rng.integers(0, 2**32, t, dtype=np.uint64).astype(np.uint32),
                            -rng.random(t, dtype=np.float32) * 10,
                            rng.integers(-32767, 32768, (t, SKETCH_DIM)).astype(np.int16),
                            int(rng.integers(0, 2)), int(rng.integers(-2_000_000, 2_000_000))) for r in range(s)]
        groups.append(Group(gi, "add", rng.integers(0, 2**32, prompt_tokens, dtype=np.uint64).astype(np.uint32),
                            rollouts))
    header = Header(protocol_version=PROTOCOL_VERSION, netuid=1, window=123456, block_hash="ab" * 32,
                    block_time=1_765_000_000, hotkey="5" + "F" * 47,
                    beacon=BeaconModel(chain_hash="cd" * 32, round=5_000_000, signature="ef" * 48,
                                       previous_signature=""),
                    model_fingerprint="12" * 32, group_size=s, max_new_tokens=t, n_groups=n_groups,
                    rows_root=rows_root(groups).hex())
    return encode_bundle(Bundle(header, b"\x01" * 64, groups))


def build(case: str) -> bytes:
    import numpy as np

    from verification.bundle_size import bundle_limit
    from verification.constants import BASE_GENERATION, BUNDLE_MAGIC, MAX_BUNDLE_BYTES, MAX_PROMPT_TOKENS
    from types import SimpleNamespace

    bound = bundle_limit(SimpleNamespace(**{k: BASE_GENERATION[k] for k in ("group_size", "max_new_tokens")}))
    size = MAX_BUNDLE_BYTES if case.endswith("_64mib") else bound
    room = size - len(BUNDLE_MAGIC)
    rng = np.random.default_rng(7)

    def fill(unit: bytes) -> bytes:
        n = (room - 2 - len(unit)) // (len(unit) + 1) + 1
        return BUNDLE_MAGIC + b"[" + (unit + b",") * (n - 1) + unit + b"]"

    kind = case.removesuffix("_64mib")
    if kind == "honest_8":
        return _honest(8, 40, rng)
    if kind == "honest_256":
        return _honest(256, MAX_PROMPT_TOKENS, rng)
    if kind == "empty_objects":
        return fill(b"{}")
    if kind == "empty_arrays":
        return fill(b"[]")
    if kind == "flat_zeros":
        return fill(b"0")
    if kind == "empty_strings":
        return fill(b'""')
    if kind == "huge_string":
        return BUNDLE_MAGIC + b'["' + b"A" * (room - 4) + b'"]'
    if kind == "escaped_string":
        return BUNDLE_MAGIC + b'["' + b"\\u0100" * ((room - 4) // 6) + b'"]'
    if kind == "deep_nesting":
        return BUNDLE_MAGIC + b"[" * (room // 2) + b"]" * (room // 2)
    if kind == "long_number":
        return BUNDLE_MAGIC + b"[" + b"1" * (room - 2) + b"]"
    if kind == "many_keys":
        keys, used, n = [], 2, 0
        while used + len(b'"%d":0,' % n) <= room:
            keys.append(b'"%d":0' % n)
            used += len(keys[-1]) + 1
            n += 1
        return BUNDLE_MAGIC + b"{" + b",".join(keys) + b"}"
    if kind == "honest_shape_bad_tail":
        good = _honest(256, MAX_PROMPT_TOKENS, rng)
        return good[:-3] + b'X"}'  # the signature's last hex digit: parsed all the way to the schema
    if kind == "oversize":
        return BUNDLE_MAGIC + b" " * (bound + 1 - len(BUNDLE_MAGIC))
    raise SystemExit(f"unknown case {case}")


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak resident size (VmHWM), so the peak
    read after the path is the path's, not the body's construction."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one(case: str, repeats: int) -> dict:
    """Runs in the child: the validator's path up to the Verifier on this case's body."""
    import gc
    import hashlib
    import tracemalloc
    from types import SimpleNamespace

    from verification.bundle import decode_bundle
    from verification.constants import BASE_GENERATION
    from verification.errors import BundleFormatError
    from verification.verifier import format_verdict

    gen = None if case.endswith("_64mib") else SimpleNamespace(
        **{k: BASE_GENERATION[k] for k in ("group_size", "max_new_tokens")})
    data = build(case)

    def path() -> str:
        hashlib.sha256(data).digest()
        try:
            b = decode_bundle(data, generation=gen)
        except BundleFormatError as exc:
            v = format_verdict(exc)
            return f"{v.reason}: {v.detail[:90]}"
        return f"parsed ({b.header.n_groups} groups)"

    gc.collect()
    _reset_peak_rss()
    rss_before = _rss_now()
    cpu = []
    for _ in range(repeats):
        t = time.process_time()
        outcome = path()
        cpu.append(time.process_time() - t)
        gc.collect()
    peak_rss = _peak_rss()
    tracemalloc.start()
    path()
    _, peak_alloc = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"case": case, "bytes": len(data), "outcome": outcome, "cpu_s": min(cpu),
            "peak_alloc_bytes": peak_alloc, "rss_growth_bytes": max(peak_rss - rss_before, 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.stdout.write(json.dumps(one(args.one, args.repeats)) + "\n")
        return 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", case, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, env=env, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"{case}: {out.stderr.strip()[-2000:]}")
        rows.append(json.loads(out.stdout))
        r = rows[-1]
        print(f"{case:24s} {r['bytes']:>10,d} B  {r['cpu_s']:.4f} CPU-s  alloc {r['peak_alloc_bytes'] / 2**20:8.2f} MiB  "
              f"rss+ {r['rss_growth_bytes'] / 2**20:8.2f} MiB  {r['outcome'][:60]}", flush=True)
    ref = next(r for r in rows if r["case"] == HONEST_REFERENCE)
    for r in rows:
        r["cpu_vs_honest"] = r["cpu_s"] / ref["cpu_s"]
        r["alloc_vs_honest"] = r["peak_alloc_bytes"] / ref["peak_alloc_bytes"]
        r["alloc_per_byte"] = r["peak_alloc_bytes"] / r["bytes"]
    hostile = [r for r in rows if not r["case"].startswith("honest_") or r["case"] == "honest_shape_bad_tail"]
    bounded = [r for r in hostile if not r["case"].endswith("_64mib")]
    worst_cpu = max(r["cpu_vs_honest"] for r in bounded)
    worst_alloc = max(r["alloc_vs_honest"] for r in bounded)

    from report_lib import md_table, write  # torch: only in the parent, after the children ran

    import platform
    data = {"reference": HONEST_REFERENCE, "cases": rows, "worst_cpu_vs_honest": worst_cpu,
            "worst_alloc_vs_honest": worst_alloc, "repeats": args.repeats,
            "python": platform.python_version(), "machine": platform.machine()}
    table = md_table(
        ["case", "bytes", "CPU s", "x honest", "peak alloc MiB", "x honest", "alloc / byte", "RSS growth MiB", "outcome"],
        [[r["case"], f"{r['bytes']:,}", f"{r['cpu_s']:.4f}", f"{r['cpu_vs_honest']:.2f}",
          f"{r['peak_alloc_bytes'] / 2**20:.2f}", f"{r['alloc_vs_honest']:.2f}", f"{r['alloc_per_byte']:.2f}",
          f"{r['rss_growth_bytes'] / 2**20:.1f}", r["outcome"].replace("|", "/")[:70]] for r in rows])
    md = (f"# Hostile bundles: cost to refuse or parse up to the Verifier\n\n"
          f"`python scripts/hostile_bundles.py --repeats {args.repeats}` (Python {data['python']}, {data['machine']}). "
          f"Each case in a fresh process: SHA-256 + decode_bundle under the base params' window bound; CPU is the best "
          f"of {args.repeats}, peak alloc from tracemalloc, RSS growth = peak RSS (VmHWM, reset after the body is built) - RSS before the path. "
          f"Reference: `{HONEST_REFERENCE}` (the largest honest bundle of the base params). `*_64mib`: no window "
          f"bound (MAX_BUNDLE_BYTES only), the scan alone.\n\n{table}\n"
          f"Worst hostile case within the window bound: {worst_cpu:.2f}x the honest reference's CPU, "
          f"{worst_alloc:.2f}x its peak allocation.\n")
    jp, mp = write("hostile_bundles", data, md)
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
