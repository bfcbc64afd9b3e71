"""Import time of the pure protocol core against the layers above it, each in a fresh interpreter.

    python3 scripts/import_time.py [--repeats 7]

Each module set is imported in a new `python3 -c` process (the interpreter's own start-up measured
separately with an empty program and subtracted), median of the repeats, side by side in one run.
Writes reports/import_time.{md,json}. The pure core is what an auditor's verifier and the validator
share (verification/ without its model-bound modules); it must stay light enough to run anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.report_lib import environment, md_table, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "bittensor", "web3", "boto3", "pydantic", "numpy")
SETS = {
    "pure core (verification.verifier, bundle, challenge, environments, scoring)":
        "import verification.verifier, verification.bundle, verification.challenge, "
        "verification.environments, verification.scoring",
    "model-bound protocol (verification.model)": "import verification.model",
    "miner role (miner.service)": "import miner.service",
    "validator role (validator.service)": "import validator.service",
    "the CLI (rollproof.cli)": "import rollproof.cli",
}


def run_once(code: str) -> tuple[float, list[str]]:
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return time.perf_counter() - t0, [m for m in out.stdout.strip().split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    start = statistics.median(run_once("pass")[0] for _ in range(args.repeats))
    results = []
    for label, code in SETS.items():
        times, loaded = [], []
        for _ in range(args.repeats):
            t, loaded = run_once(code)
            times.append(t)
        results.append({"set": label, "code": code, "median_s": statistics.median(times) - start,
                        "min_s": min(times) - start, "heavy_loaded": loaded})
    data = {"environment": environment(), "interpreter_start_s": start, "repeats": args.repeats, "results": results}
    md = ("# Import time of each layer\n\n`python3 scripts/import_time.py --repeats "
          f"{args.repeats}`: each set imported in a fresh interpreter, median of {args.repeats}, the "
          f"interpreter's own start-up ({start * 1000:.0f} ms) subtracted.\n\n")
    md += md_table(["imports", "median", "fastest", "heavy modules loaded"],
                   [[r["set"], f"{r['median_s'] * 1000:.0f} ms", f"{r['min_s'] * 1000:.0f} ms",
                     ", ".join(r["heavy_loaded"]) or "none"] for r in results])
    jp, mp = write("import_time", data, md)
    print(md)
    print(f"wrote {mp} and {jp}")


if __name__ == "__main__":
    main()
