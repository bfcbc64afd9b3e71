"""How much choice the sampling rule leaves a miner, measured along honest rollouts.

For every position of honest rollouts it counts the tokens that would pass the sampling check:
  * v3 (this protocol): counter-based Gumbel-max, tokens within GUMBEL_MARGIN of the best score;
  * v2 (the previous rule): SHAKE-256 Gumbel noise, tokens within 0.02 nats of the best;
  * inverse-CDF (the cheaper rule measured and rejected, docs/security.md): one uniform u per
    position, tokens whose CDF interval lies within --icdf-margin of u.
It reports the share of positions with a second valid token, the bits of choice per rollout (sum of
log2 of the count), and the steering attack: end the completion early wherever EOS passes (the
prefix is the honest one, so the shortened rollout is accepted): rollouts shortened, tokens saved.
It also measures each rule's honest drift between two recompute configurations (batch 8
right-padded vs batch 1 left-padded): the change of the chosen token's score gap to every other
token (Gumbel rules) and of the CDF at the chosen interval's ends (inverse-CDF). A margin must
exceed its rule's drift, and the choice it leaves grows with it.

    python scripts/steering.py [--model tiny|smollm2] [--groups 12] [--windows 2]

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
from verification.constants import GUMBEL_MARGIN
from verification.drand_local import LocalDrand
from verification.model import load_model
from verification.prf import prf_bytes
from verification.sampling import gumbel_noise, noise_keys
from rollproof.device import add_device_argument, device_or_exit

V2_MARGIN = 0.02
RULES = ("v3", "v2", "icdf")


def v2_noise(seed: bytes, rollout: int, position: int, vocab: int) -> np.ndarray:
    raw = prf_bytes(4 * vocab, "gumbel", seed, rollout, position)
    return -np.log(-np.log((np.frombuffer(raw, dtype="<u4").astype(np.float64) + 0.5) * 2.0**-32))


def icdf_uniforms(seed: bytes, rollout: int, n: int) -> np.ndarray:
    raw = np.frombuffer(prf_bytes(8 * n, "sample", seed, rollout), dtype="<u8")
    return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def cdf(lp: np.ndarray) -> np.ndarray:
    f = np.cumsum(np.exp(lp.astype(np.float64)), axis=-1)
    return f / f[..., -1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--margin", type=float, default=GUMBEL_MARGIN, help="v3 margin (nats)")
    ap.add_argument("--icdf-margin", type=float, default=1e-4)
    add_device_argument(ap)
    args = ap.parse_args()
    device = device_or_exit(args.device)
    console = Console()
    lm = load_model(args.model, device)
    eos = set(lm.eos_ids)
    drand = LocalDrand()
    margins = {"v3": args.margin, "v2": V2_MARGIN, "icdf": args.icdf_margin}
    multi = dict.fromkeys(RULES, 0)
    bits = {r: [] for r in RULES}
    short = dict.fromkeys(RULES, 0)
    saved = dict.fromkeys(RULES, 0)
    drift_gap = drift_cdf = drift_lp = drift_top = honest_gap = 0.0
    positions = rollouts = tokens_total = 0
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
                keys = noise_keys(seed, r.index, len(toks))
                u = icdf_uniforms(seed, r.index, len(toks))
                f, f_alt = cdf(lp), cdf(lp_alt)
                b = dict.fromkeys(RULES, 0.0)
                first_eos = dict.fromkeys(RULES)
                for i, c in enumerate(toks):
                    positions += 1
                    d = lp_alt[i].astype(np.float64) - lp[i].astype(np.float64)
                    drift_lp = max(drift_lp, float(np.abs(d).max()))
                    drift_gap = max(drift_gap, float(np.abs(d - d[c]).max()))
                    lo = f[i, c - 1] if c > 0 else 0.0
                    lo_alt = f_alt[i, c - 1] if c > 0 else 0.0
                    drift_cdf = max(drift_cdf, abs(f[i, c] - f_alt[i, c]), abs(lo - lo_alt))
                    s3 = lp[i].astype(np.float64) + gumbel_noise(int(keys[i]), lp.shape[-1])
                    # what can flip a verdict: the score differences of the tokens that compete with
                    # the chosen one (the 8 best perturbed scores), and the recomputed gap itself
                    top = np.argsort(s3)[-8:]
                    drift_top = max(drift_top, float(np.abs(d[top] - d[c]).max()))
                    s3_alt = s3 + d
                    honest_gap = max(honest_gap, float(s3_alt.max() - s3_alt[c]))
                    s2 = lp[i].astype(np.float64) + v2_noise(seed, r.index, i, lp.shape[-1])
                    lower = np.concatenate([[0.0], f[i, :-1]])
                    passing = {
                        "v3": np.flatnonzero(s3.max() - s3 <= margins["v3"]),
                        "v2": np.flatnonzero(s2.max() - s2 <= margins["v2"]),
                        "icdf": np.flatnonzero((lower - margins["icdf"] <= u[i]) & (u[i] <= f[i] + margins["icdf"])),
                    }
                    for rule, p in passing.items():
                        multi[rule] += len(p) > 1
                        b[rule] += math.log2(max(len(p), 1))
                        if i < len(toks) - 1 and first_eos[rule] is None and eos & set(p.tolist()):
                            first_eos[rule] = i
                for rule in RULES:
                    bits[rule].append(b[rule])
                    if first_eos[rule] is not None:
                        short[rule] += 1
                        saved[rule] += len(toks) - (first_eos[rule] + 1)
                tokens_total += len(toks)
    result = {"model": args.model, "rollouts": rollouts, "positions": positions, "margins": margins,
              "drift": {"max_logprob": drift_lp, "max_gap_any_token": drift_gap, "max_gap_top8": drift_top,
                        "max_honest_recomputed_gap": honest_gap, "max_cdf": drift_cdf}, "environment": environment(device)}
    for rule in RULES:
        result[rule] = {"share_positions_with_choice": multi[rule] / positions,
                        "mean_bits_per_rollout": float(np.mean(bits[rule])), "max_bits_per_rollout": float(np.max(bits[rule])),
                        "rollouts_shortened": short[rule], "tokens_saved_share": saved[rule] / tokens_total}
    rows = [
        ["margin", f"{margins['v3']:g} nats", f"{margins['v2']:g} nats", f"{margins['icdf']:g} (probability)"],
        ["honest drift of what the margin bounds (max; Gumbel: vs the 8 best scores)", f"{drift_top:.2e}",
         f"{drift_top:.2e}", f"{drift_cdf:.2e}"],
        ["margin / drift", f"{margins['v3'] / max(drift_top, 1e-300):.0f}x", f"{margins['v2'] / max(drift_top, 1e-300):.0f}x",
         f"{margins['icdf'] / max(drift_cdf, 1e-300):.0f}x"],
        ["positions with a second valid token"] + [f"{100 * result[r]['share_positions_with_choice']:.3f} %" for r in RULES],
        ["bits of choice per rollout (mean / max)"] + [f"{result[r]['mean_bits_per_rollout']:.4f} / {result[r]['max_bits_per_rollout']:.2f}" for r in RULES],
        ["steering: rollouts that can end early (accepted)"] + [f"{short[r]}/{rollouts}" for r in RULES],
        ["steering: tokens saved"] + [f"{100 * result[r]['tokens_saved_share']:.2f} %" for r in RULES],
    ]
    md = (f"# Sampling choice and steering ({args.model})\n\nCommand: `python scripts/steering.py --model {args.model} "
          f"--groups {args.groups} --windows {args.windows}`\n\n{rollouts} honest rollouts, {positions} positions; "
          f"max honest logprob drift over the whole vocabulary {drift_lp:.2e}; max change of a score difference "
          f"to any token {drift_gap:.2e}; largest recomputed gap of an honest token {honest_gap:.2e}.\n\n"
          + md_table(["measure", "v3: counter Gumbel (this protocol)", "v2: SHAKE Gumbel", "inverse-CDF (rejected)"], rows))
    for r in rows:
        console.print(" | ".join(r))
    jp, mp = write(f"steering_{args.model.replace(':', '_').replace('/', '_')}", result, md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
