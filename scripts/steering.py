"""How much choice the sampling rule leaves a miner, measured along honest rollouts.

For every position of honest rollouts it counts the tokens that would pass the sampling check:
  * v3 (this protocol): tokens whose CDF interval lies within SAMPLING_MARGIN of the position's u;
  * v2 (the previous rule, for comparison): tokens whose Gumbel-perturbed score is within 0.02 nats
    of the best (noise recomputed here exactly as v2 defined it).
It reports the share of positions with a second valid token, the bits of choice per rollout
(sum of log2 of the count), and the steering attack: end the completion early wherever EOS passes
(the prefix is the honest one, so the shortened rollout is accepted): rollouts shortened and
tokens saved. It also measures the honest drift of the CDF at the chosen token's interval ends
between two recompute configurations (batch 8 right-padded vs batch 1 left-padded), which is
what SAMPLING_MARGIN must exceed.

    python scripts/steering.py [--model tiny|smollm2] [--groups 12] [--windows 2] [--margin X]

Writes reports/steering_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from rich.console import Console

from adversary import lib as A
from report_lib import environment, md_table, write
from verification.constants import SAMPLING_MARGIN
from verification.drand_local import LocalDrand
from verification.model import load_model
from verification.prf import prf_bytes
from verification.sampling import cdf, uniforms

V2_MARGIN = 0.02


def v2_noise(seed: bytes, rollout: int, position: int, vocab: int) -> np.ndarray:
    raw = prf_bytes(4 * vocab, "gumbel", seed, rollout, position)
    return -np.log(-np.log((np.frombuffer(raw, dtype="<u4").astype(np.float64) + 0.5) * 2.0**-32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--margin", type=float, default=SAMPLING_MARGIN)
    args = ap.parse_args()
    console = Console()
    lm = load_model(args.model)
    eos = sorted(lm.eos_ids)
    drand = LocalDrand()
    positions = multi_v3 = multi_v2 = 0
    bits_v3, bits_v2 = [], []
    short_v3 = short_v2 = saved_v3 = saved_v2 = tokens_total = 0
    drift = 0.0
    rollouts = 0
    for w in range(args.windows):
        ctx, key = A.window_ctx(drand, 7000 + w), A.keypair(50 + w)
        bundle = A.honest(lm, ctx, key, args.groups)
        for g in bundle.groups:
            seed = ctx.problem_seed(key.ss58_address, g.index)
            comps = [r.completion for r in g.rollouts]
            ref = lm.teacher_forced(g.prompt.tolist(), comps, batch_size=8, padding_side="right")
            alt = lm.teacher_forced(g.prompt.tolist(), comps, batch_size=1, padding_side="left")
            for r, (_, lp), (_, lp_alt) in zip(g.rollouts, ref, alt):
                rollouts += 1
                toks = r.completion.astype(np.int64)
                u = uniforms(seed, r.index, len(toks))
                f, f_alt = cdf(lp), cdf(lp_alt)
                rows = np.arange(len(toks))
                lo = np.where(toks > 0, f[rows, np.maximum(toks - 1, 0)], 0.0)
                lo_alt = np.where(toks > 0, f_alt[rows, np.maximum(toks - 1, 0)], 0.0)
                drift = max(drift, float(np.abs(f[rows, toks] - f_alt[rows, toks]).max()),
                            float(np.abs(lo - lo_alt).max()))
                b3 = b2 = 0.0
                first_eos_v3 = first_eos_v2 = None
                for i in range(len(toks)):
                    positions += 1
                    lower = np.concatenate([[0.0], f[i, :-1]])
                    passing = np.flatnonzero((lower - args.margin <= u[i]) & (u[i] <= f[i] + args.margin))
                    s = lp[i].astype(np.float64) + v2_noise(seed, r.index, i, lp.shape[-1])
                    passing2 = np.flatnonzero(s.max() - s <= V2_MARGIN)
                    multi_v3 += len(passing) > 1
                    multi_v2 += len(passing2) > 1
                    b3 += math.log2(len(passing))
                    b2 += math.log2(max(len(passing2), 1))
                    if i < len(toks) - 1:
                        if first_eos_v3 is None and any(e in passing for e in eos):
                            first_eos_v3 = i
                        if first_eos_v2 is None and any(e in passing2 for e in eos):
                            first_eos_v2 = i
                bits_v3.append(b3)
                bits_v2.append(b2)
                tokens_total += len(toks)
                if first_eos_v3 is not None:
                    short_v3 += 1
                    saved_v3 += len(toks) - (first_eos_v3 + 1)
                if first_eos_v2 is not None:
                    short_v2 += 1
                    saved_v2 += len(toks) - (first_eos_v2 + 1)
    result = {
        "model": args.model, "rollouts": rollouts, "positions": positions, "margin_v3": args.margin,
        "margin_v2": V2_MARGIN, "share_positions_with_choice_v3": multi_v3 / positions,
        "share_positions_with_choice_v2": multi_v2 / positions,
        "mean_bits_per_rollout_v3": float(np.mean(bits_v3)), "max_bits_per_rollout_v3": float(np.max(bits_v3)),
        "mean_bits_per_rollout_v2": float(np.mean(bits_v2)), "max_bits_per_rollout_v2": float(np.max(bits_v2)),
        "rollouts_shortened_v3": short_v3, "rollouts_shortened_v2": short_v2,
        "tokens_saved_share_v3": saved_v3 / tokens_total, "tokens_saved_share_v2": saved_v2 / tokens_total,
        "max_cdf_drift_between_recompute_configs": drift, "environment": environment(),
    }
    rows = [
        ["positions with a second valid token", f"{100 * result['share_positions_with_choice_v3']:.3f} %",
         f"{100 * result['share_positions_with_choice_v2']:.3f} %"],
        ["bits of choice per rollout (mean / max)", f"{result['mean_bits_per_rollout_v3']:.4f} / {result['max_bits_per_rollout_v3']:.2f}",
         f"{result['mean_bits_per_rollout_v2']:.3f} / {result['max_bits_per_rollout_v2']:.2f}"],
        ["steering: rollouts that can end early (accepted)", f"{short_v3}/{rollouts}", f"{short_v2}/{rollouts}"],
        ["steering: tokens saved", f"{100 * result['tokens_saved_share_v3']:.2f} %", f"{100 * result['tokens_saved_share_v2']:.2f} %"],
    ]
    md = (f"# Sampling choice and steering ({args.model})\n\nCommand: `python scripts/steering.py --model {args.model} "
          f"--groups {args.groups} --windows {args.windows} --margin {args.margin:g}`\n\n"
          f"{rollouts} honest rollouts, {positions} positions. v3: inverse-CDF, margin {args.margin:g}; "
          f"v2: Gumbel-max, margin {V2_MARGIN} nats.\n\n"
          + md_table(["measure", "v3 (this protocol)", "v2 (previous)"], rows)
          + f"\nHonest CDF drift at the chosen tokens' interval ends between recompute configurations "
            f"(batch 8 right-padded vs batch 1 left-padded): max {drift:.2e} (margin {args.margin:g}).\n")
    for r in rows:
        console.print(f"{r[0]:<50} {r[1]:>18} {r[2]:>18}")
    console.print(f"max CDF drift {drift:.2e}")
    jp, mp = write(f"steering_{args.model.replace(':', '_').replace('/', '_')}", result, md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
