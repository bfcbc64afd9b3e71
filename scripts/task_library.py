"""Base greedy accuracy of the library-backed environments (issue 28): which rg_chain_sum and
rg_basic_arithmetic settings sit where SmolLM2's greedy accuracy is 0.15-0.6 (a transfer task).
Measurement only; nothing here is protocol.

Per setting: GenerationParams = BASE_GENERATION with that one environment (max_new_tokens 24), the
evaluation's own problems (trainer.heldout.evaluation_seeds(netuid, n, task=setting)), greedy
decoding (trainer.heldout.evaluate_greedy), the protocol's reward. Writes reports/task_library.json
and prints a markdown table (Wilson 95% intervals).

    PYTHONPATH=. nice -n 19 python3 scripts/task_library.py --problems 48
    PYTHONPATH=. nice -n 19 python3 scripts/task_library.py --problems 48 --out reports/task_library_2.json \
        --setting rg_chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [
    ("rg_chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("rg_chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}),
    ("rg_chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}),
]


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z, p = 1.96, k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def label(name: str, params: dict) -> str:
    return name + "(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--netuid", type=int, default=1)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--setting", action="append", default=[],
                    help="name:key=value,... (repeatable); default: the SETTINGS list")
    ap.add_argument("--out", default=str(ROOT / "reports" / "task_library.json"))
    args = ap.parse_args()
    settings = [(s.split(":")[0], {k: int(v) for k, v in (kv.split("=") for kv in s.split(":")[1].split(","))})
                for s in args.setting] or SETTINGS

    from trainer.heldout import evaluate_greedy, evaluation_seeds
    from verification.constants import BASE_GENERATION
    from verification.generation import GenerationParams
    from verification.model import load_model

    lm = load_model("smollm2")
    rows = []
    for name, params in settings:
        tag = label(name, params)
        gen = GenerationParams.from_json({**BASE_GENERATION, "environments": [{"name": name, "weight": 1, "params": params}]})
        seeds = evaluation_seeds(args.netuid, args.problems, task=tag)
        t0 = time.monotonic()
        res = evaluate_greedy(lm, gen, seeds, batch_size=args.batch)
        secs = time.monotonic() - t0
        k, n = sum(res.correct), len(res.correct)
        lo, hi = wilson(k, n)
        from verification import environments
        first = environments.problem_for(seeds[0], gen)[1]
        rows.append({"setting": tag, "correct": k, "n": n, "accuracy": res.accuracy, "ci95": [lo, hi],
                     "chance": res.chance, "seconds": secs, "example_prompt": first.prompt,
                     "example_answer": first.answer["answer"], "example_completion": res.completions[0]})
        print(f"| {tag} | {k}/{n} = {res.accuracy:.3f} [{lo:.2f}, {hi:.2f}] | {res.chance:.4f} | {secs:.0f} |", flush=True)
    Path(args.out).write_text(json.dumps({"model": "smollm2", "max_new_tokens": BASE_GENERATION["max_new_tokens"],
                                          "netuid": args.netuid, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
