"""False-rejection matrix: honest rollouts re-verified under every recompute setting a validator
might use. Target: zero rejected positions and rollouts in every allowed cell.

    python scripts/false_rejections.py [--positions 10000] [--model tiny|smollm2] [--engine hf|vllm]

The rollouts are generated once, as a miner would (KV-cached decoding, batch 16, left padding).
Each cell re-runs the full Verifier with one recompute setting changed and counts, per position,
the failures of the sketch, sampling and logprob checks. bf16 is not an allowed compute precision: its row
shows the rejections a bf16 validator would cause (and why the protocol pins float32).
--engine vllm generates the honest rollouts with the vLLM engine (the miner side); every cell
still verifies with the HF recompute. A missing vLLM: one `error:` line, exit 2.
Writes reports/false_rejections_<model>[_vllm].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from adversary import lib as A
from engine_args import add_engine_arguments, check_engine_or_exit, engine_suffix, open_engine_or_exit
from report_lib import environment, md_table, write
from verification.drand_local import LocalDrand
from verification.model import load_model
from verification.verifier import Verifier
from rollproof.device import add_device_argument, device_or_exit

CELLS = [
    # name, batch size, padding, threads, attention, dtype, allowed
    ("reference: batch 8, right pad, 2 threads, sdpa, fp32", 8, "right", 2, "sdpa", torch.float32, True),
    ("batch 1", 1, "right", 2, "sdpa", torch.float32, True),
    ("batch 4", 4, "right", 2, "sdpa", torch.float32, True),
    ("left padding", 8, "left", 2, "sdpa", torch.float32, True),
    ("1 thread", 8, "right", 1, "sdpa", torch.float32, True),
    ("eager attention", 8, "right", 2, "eager", torch.float32, True),
    ("eager + left padding + batch 1 + 1 thread", 1, "left", 1, "eager", torch.float32, True),
    ("bf16 validator (not allowed by the protocol)", 8, "right", 2, "sdpa", torch.bfloat16, False),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=10_000, help="honest positions per cell (at least)")
    ap.add_argument("--model", default="tiny")
    add_device_argument(ap)
    ap.add_argument("--verify-device", default=None,
                    help="device of the verifying cells (default: --device); e.g. --device cuda "
                         "--verify-device cpu measures a miner on an accelerator against a validator on a CPU")
    add_engine_arguments(ap)
    args = ap.parse_args()
    check_engine_or_exit(args)
    device = device_or_exit(args.device)
    verify_device = device if args.verify_device is None else device_or_exit(args.verify_device, "--verify-device")
    console = Console()
    lm = load_model(args.model, device)
    lm = lm.with_generation(lm.generation.with_groups(4))  # every bundle holds the checkpoint's groups
    vlm = lm if verify_device == device else load_model(args.model, verify_device).with_generation(lm.generation)
    drand = LocalDrand()
    engine = open_engine_or_exit(args, lm, device)
    t0 = time.time()
    bundles, positions, w = [], 0, 0
    try:
        with console.status(f"generating honest rollouts ({args.engine} engine)…"):
            while positions < args.positions:
                ctx, key = A.window_ctx(drand, 5000 + w), A.keypair(w)
                b = A.honest(lm, ctx, key, engine=engine)
                bundles.append((ctx, key, b))
                positions += sum(len(r.completion) for _, r in b.rows())
                w += 1
    finally:
        if engine is not None:
            engine.close()
    gen_s = time.time() - t0
    console.print(f"{positions} honest positions in {sum(len(b.groups) for *_, b in bundles) * lm.generation.group_size} rollouts "
                  f"({gen_s:.0f} s)")
    rows, data = [], {"model": args.model, "engine": args.engine, "positions": positions, "cells": {},
                      "environment": environment(device),
                      "verify_environment": environment(verify_device)}
    base_threads = torch.get_num_threads()
    for name, batch, pad, threads, attn, dtype, allowed in CELLS:
        torch.set_num_threads(threads)
        cell_lm = A.variant(vlm, name, lambda m: m.to(dtype)) if dtype != torch.float32 else vlm
        cell_lm.model.set_attn_implementation(attn)
        verifier = Verifier(cell_lm, [drand.info], batch_size=batch, padding_side=pad)
        counts = {"positions": 0, "rollouts": 0, "bad_sketch": 0, "bad_sample": 0, "bad_logprob": 0,
                  "rejected_rollouts": 0, "max_sketch_dist": 0, "max_gap": 0.0, "max_logprob_err": 0.0}
        t1 = time.time()
        for ctx, key, b in bundles:
            for v in verifier.verify(b, A.expectation(ctx, key, lm)).rollouts:
                s = v.stats
                counts["positions"] += s["tokens"]
                counts["rollouts"] += 1
                counts["bad_sketch"] += s["bad_sketch_positions"]
                counts["bad_sample"] += s["bad_sample_positions"]
                counts["bad_logprob"] += s["bad_logprob_positions"]
                counts["rejected_rollouts"] += not v.ok
                counts["max_sketch_dist"] = max(counts["max_sketch_dist"], s["max_sketch_dist"])
                counts["max_gap"] = max(counts["max_gap"], s["max_gap"])
                counts["max_logprob_err"] = max(counts["max_logprob_err"], s["max_logprob_err"])
        counts["seconds"] = time.time() - t1
        counts["allowed"] = allowed
        vlm.model.set_attn_implementation("sdpa")
        data["cells"][name] = counts
        rows.append([name, counts["positions"], counts["bad_sketch"], counts["bad_sample"], counts["bad_logprob"],
                     f"{counts['rejected_rollouts']}/{counts['rollouts']}", counts["max_sketch_dist"],
                     f"{counts['max_gap']:.2e}", f"{counts['max_logprob_err']:.2e}"])
    torch.set_num_threads(base_threads)
    headers = ["cell", "positions", "sketch fails", "sampling fails", "logprob fails", "rollouts rejected",
               "max sketch dist", "max gap", "max logprob err"]
    table = Table(title=f"false rejections, honest rollouts, {args.model}")
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    console.print(table)
    devices = "" if args.device == "cpu" and args.verify_device is None else \
        f" --device {args.device}" + ("" if args.verify_device is None else f" --verify-device {args.verify_device}")
    suffix = "" if not devices else "_" + str(device).replace(":", "") + "_to_" + str(verify_device).replace(":", "")
    suffix += engine_suffix(args)
    engine_flag = "" if args.engine == "hf" else f" --engine {args.engine}"
    engine_note = "" if args.engine == "hf" else (
        f"The honest rollouts come from the {args.engine} engine (the miner side); every cell verifies them with "
        "the HF recompute.\n\n")
    allowed_ok = all(c["rejected_rollouts"] == 0 for c in data["cells"].values() if c["allowed"])
    md = (f"# False-rejection matrix ({args.model})\n\nCommand: `python scripts/false_rejections.py "
          f"--positions {args.positions} --model {args.model}{devices}{engine_flag}`\n\n" + engine_note
          + md_table(headers, rows)
          + f"\nEvery allowed cell: {'zero' if allowed_ok else 'SOME'} false rejections.\n")
    jp, mp = write(f"false_rejections_{args.model.replace(':', '_').replace('/', '_')}{suffix}", data, md)
    console.print(f"wrote {jp} and {mp}")
    return 0 if allowed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
