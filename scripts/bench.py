"""Cost benchmark, side by side in one run on the same rollouts:

  * miner generation with proofs (seeded Gumbel sampling + sketches) vs without (plain sampling),
    both decoding exactly MAX_NEW_TOKENS per rollout so that the work is equal: tokens/s, overhead %;
  * validator verification (full recompute + every check, every position) vs generation: ratio;
  * proof bytes per token (sketch) and bundle bytes per token;
  * validator throughput in verified rollouts per second.

    python scripts/bench.py [--groups 8] [--model tiny|smollm2] [--batch 16] [--repeats 5] [--threads N] [--device cpu|cuda[:N]]

With and without proofs alternate (the order flips every repeat) and the overhead is the median of
the per-repeat ratios, so other work on a shared machine hits both alike.

Writes reports/bench_<model>[_<N>threads].{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from rich.console import Console

from adversary import lib as A
from miner.engine import generate
from miner.proof import rollout_requests
from report_lib import environment, md_table, write
from rollproof.device import add_device_argument, add_threads_argument, threads_and_device_or_exit
from verification.bundle import encode_bundle
from verification.constants import SKETCH_DIM
from verification.drand_local import LocalDrand
from verification.model import default_batch_rows, load_model
from verification.sketch import sketch_vectors
from verification.verifier import Verifier


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5, help="alternating repeats of with/without proofs")
    add_threads_argument(ap)
    add_device_argument(ap)
    args = ap.parse_args()
    device = threads_and_device_or_exit(args)
    console = Console()
    lm = load_model(args.model, device)
    lm = lm.with_generation(lm.generation.with_groups(args.groups))  # every bundle holds the checkpoint's groups
    drand = LocalDrand()
    ctx, key = A.window_ctx(drand, 9000), A.keypair(0)
    vectors = sketch_vectors(ctx.sketch_key, lm.hidden_size)
    requests = rollout_requests(lm, ctx, key.ss58_address, list(range(args.groups)))

    def timed(proofs: bool):
        torch.manual_seed(0)
        t = time.perf_counter()
        out = generate(lm, requests, vectors, batch_size=args.batch, proofs=proofs, stop_at_eos=False)
        return time.perf_counter() - t, sum(len(o.completion) for o in out)

    timed(True)  # warm-up
    with_s, without_s, with_tok, without_tok = [], [], 0, 0
    for r in range(args.repeats):
        for proofs in ((True, False) if r % 2 == 0 else (False, True)):
            s, n = timed(proofs)
            if proofs:
                with_s.append(s); with_tok = n
            else:
                without_s.append(s); without_tok = n
    tps_with = with_tok / statistics.median(with_s)
    tps_without = without_tok / statistics.median(without_s)
    overhead = 100.0 * statistics.median([(w / with_tok) / (o / without_tok) - 1.0 for w, o in zip(with_s, without_s)])

    t = time.perf_counter()
    bundle = A.honest(lm, ctx, key)
    gen_bundle_s = time.perf_counter() - t
    data = encode_bundle(bundle)
    tokens = sum(len(r.completion) for _, r in bundle.rows())
    verifier = Verifier(lm, [drand.info], batch_size=default_batch_rows(device))
    t = time.perf_counter()
    verdict = verifier.verify_bytes(data, A.expectation(ctx, key, lm))
    verify_s = time.perf_counter() - t
    assert verdict.ok, verdict.detail
    rollouts = len(verdict.rollouts)
    result = {
        "model": args.model, "groups": args.groups, "rollouts": rollouts, "batch": args.batch,
        "gen_tokens_per_s_with_proofs": tps_with, "gen_tokens_per_s_without_proofs": tps_without,
        "proof_overhead_pct": overhead,
        "bundle_generation_s": gen_bundle_s, "verification_s": verify_s,
        "verify_over_generate_ratio": verify_s / gen_bundle_s,
        "validator_rollouts_per_s": rollouts / verify_s,
        "proof_bytes_per_token": 2 * SKETCH_DIM,
        "logprob_bytes_per_token": 4,
        "bundle_bytes_per_token": len(data) / tokens,
        "tokens": tokens, "repeats": args.repeats, "times_with_s": with_s, "times_without_s": without_s,
        "environment": environment(device),
    }
    rows = [
        ["generation with proofs", f"{tps_with:.1f} tokens/s"],
        ["generation without proofs", f"{tps_without:.1f} tokens/s"],
        ["proof overhead", f"{overhead:.1f} %"],
        ["verification / generation (same rollouts)", f"{result['verify_over_generate_ratio']:.3f}"],
        ["validator throughput", f"{result['validator_rollouts_per_s']:.2f} verified rollouts/s"],
        ["proof bytes per token (sketch)", f"{2 * SKETCH_DIM}"],
        ["bundle bytes per token (all fields, JSON+base64)", f"{result['bundle_bytes_per_token']:.1f}"],
    ]
    md = (f"# Cost benchmark ({args.model}, {args.groups} groups x {lm.generation.group_size} rollouts, batch {args.batch})\n\n"
          f"Command: `python scripts/bench.py --model {args.model} --groups {args.groups} --batch {args.batch} "
          f"--repeats {args.repeats}{'' if args.threads is None else f' --threads {args.threads}'}`\n\nEvery rollout decodes exactly {lm.generation.max_new_tokens} tokens (equal "
          f"work with and without proofs); {torch.get_num_threads()} threads on {environment(device)['device']}; "
          f"tokens/s and the overhead are medians of {args.repeats} alternating repeats (the overhead: of the "
          "per-repeat ratios). Verification: one bundle, every group opened, recomputed as the validator does "
          f"({default_batch_rows(device) or 'memory-bound'} rollouts per forward).\n\n"
          + md_table(["measure", "value"], rows))
    for r in rows:
        console.print(f"{r[0]:<50} {r[1]}")
    name = f"bench_{args.model.replace(':', '_').replace('/', '_')}"
    jp, mp = write(name + ("" if args.threads is None else f"_{args.threads}threads"), result, md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
