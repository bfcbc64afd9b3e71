"""Equality of the vLLM engine and the HF engine (issue 25 item 4), over real window problems.

    /work/vvenv/bin/python scripts/engine_equality.py [--model smollm2] [--windows 4] [--hotkeys 4]
        [--memory-fraction 0.1] [--batch 64]

Same model, checkpoint and seeds: for every (window, hotkey) the miner's whole bundle (the model's
generation params: groups x group_size rollouts) is built twice by miner.proof.build_groups, once
with each engine. Reported:

  * the share of identical rollouts (same tokens), the max logprob and sketch differences over the
    positions both engines generated from the same prefix;
  * for every rollout that differs: the first differing position, both tokens, and the sampling
    gap the HF recompute (the validator's) gives vLLM's token there, which must be within
    GUMBEL_MARGIN for the validator to accept it;
  * the real Verifier over every vLLM bundle with every group opened: rollouts rejected (must be 0),
    and the verifier's max gap, logprob error and sketch distance;
  * `rollproof verify` (the offline CLI) on the first vLLM bundle: its exit code and verdict line.

Writes reports/engine_equality_<model>.{json,md}. Exit 1 when any vLLM rollout is rejected, any
difference is outside the margin or `rollproof verify` does not accept; 2 when vLLM is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from adversary import lib as A
from engine_choice import add_engine_arguments, check_engine_or_exit, open_engine_or_exit
from miner.engines import HFEngine
from miner.proof import assemble_bundle, build_groups
from report_lib import environment, md_table, write
from verification.bundle import encode_bundle
from verification.constants import GUMBEL_MARGIN
from verification.drand_local import LocalDrand
from verification.model import load_model
from verification.sketch import sketch_vectors
from verification.verifier import BundleCheck, Verifier


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first position where the token sequences differ (a length difference counts), or None."""
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    if len(diff):
        return int(diff[0])
    return None if len(a) == len(b) else n


def rollproof_verify(bundle, ctx, hotkey: str, model: str) -> tuple[int, str]:
    """`rollproof verify` on the bundle's bytes: (exit code, its last output line)."""
    exe = shutil.which("rollproof")
    if exe is None:
        return -1, "the rollproof console script is not on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.json"
        path.write_bytes(encode_bundle(bundle))
        proc = subprocess.run([exe, "verify", str(path), "--model", model, "--netuid", str(ctx.netuid),
                               "--window", str(ctx.window), "--hotkey", hotkey, "--block-hash", ctx.block_hash.hex(),
                               "--block-time", str(ctx.block_time)],
                              capture_output=True, text=True, env=os.environ.copy())
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--hotkeys", type=int, default=4, help="miners per window (each builds a whole bundle)")
    ap.add_argument("--batch", type=int, default=64, help="HF batch rows and vLLM's max_num_seqs")
    add_engine_arguments(ap)
    ap.set_defaults(engine="vllm")
    args = ap.parse_args()
    if args.engine != "vllm":
        ap.error("--engine: this script compares the vllm engine with the hf engine")
    check_engine_or_exit(args)
    console = Console()
    t0 = time.time()
    lm = load_model(args.model)
    load_s = time.time() - t0
    t0 = time.time()
    vllm = open_engine_or_exit(args, lm, batch_size=args.batch)
    start_s = time.time() - t0
    hf = HFEngine(args.batch)
    gen = lm.generation
    drand = LocalDrand()
    verifier = Verifier(lm, [drand.info])
    console.print(f"{args.model}: loaded in {load_s:.0f} s, vLLM started in {start_s:.0f} s; "
                  f"{args.windows} windows x {args.hotkeys} hotkeys x {gen.groups} groups x {gen.group_size}")
    rollouts = identical = 0
    max_lp = 0.0
    max_sketch = 0
    positions_compared = 0
    differences = []
    bundles = []
    gen_s = {"vllm": 0.0, "hf": 0.0}
    tokens = {"vllm": 0, "hf": 0}
    try:
        for w in range(args.windows):
            for k in range(args.hotkeys):
                ctx, key = A.window_ctx(drand, 7000 + w), A.keypair(500 + k)
                hk = key.ss58_address
                t1 = time.time()
                gv = build_groups(lm, ctx, hk, list(range(gen.groups)), engine=vllm)
                gen_s["vllm"] += time.time() - t1
                t1 = time.time()
                gh = build_groups(lm, ctx, hk, list(range(gen.groups)), engine=hf)
                gen_s["hf"] += time.time() - t1
                vectors = sketch_vectors(ctx.sketch_key, lm.hidden_size)
                for g_v, g_h in zip(gv, gh):
                    seed = ctx.problem_seed(hk, g_v.index)
                    for r_v, r_h in zip(g_v.rollouts, g_h.rollouts):
                        rollouts += 1
                        tokens["vllm"] += len(r_v.completion)
                        tokens["hf"] += len(r_h.completion)
                        at = first_difference(r_v.completion, r_h.completion)
                        same = len(r_v.completion) if at is None else at  # positions with an equal prefix
                        if same:
                            max_lp = max(max_lp, float(np.abs(r_v.logprobs[:same] - r_h.logprobs[:same]).max()))
                        # the sketch at the first differing position comes from the same prefix too
                        n_sk = min(same + (at is not None), len(r_v.completion), len(r_h.completion))
                        if n_sk:
                            d = np.abs(r_v.sketches[:n_sk].astype(np.int32) - r_h.sketches[:n_sk].astype(np.int32))
                            max_sketch = max(max_sketch, int(d.max()))
                        positions_compared += same
                        if at is None:
                            identical += 1
                            continue
                        _, _, gaps = verifier.recompute(g_v.prompt.tolist(), [r_v], seed, vectors)[0]
                        tok_v = int(r_v.completion[at]) if at < len(r_v.completion) else None
                        tok_h = int(r_h.completion[at]) if at < len(r_h.completion) else None
                        gap = float(gaps[at]) if at < len(gaps) else float("nan")
                        differences.append({"window": ctx.window, "hotkey": hk, "group": g_v.index, "rollout": r_v.index,
                                            "position": at, "hf_token": tok_h, "vllm_token": tok_v,
                                            "hf_text": lm.tokenizer.decode([tok_h]) if tok_h is not None else "(end)",
                                            "vllm_text": lm.tokenizer.decode([tok_v]) if tok_v is not None else "(end)",
                                            "gap_of_vllm_token": gap, "within_margin": gap <= GUMBEL_MARGIN})
                bundles.append((ctx, key, assemble_bundle(ctx, key, lm.fingerprint, gv, gen)))
                console.print(f"window {ctx.window} hotkey {k}: {rollouts} rollouts, {identical} identical; "
                              f"vLLM {gen_s['vllm']:.0f} s, HF {gen_s['hf']:.0f} s")
    finally:
        if vllm is not None:
            vllm.close()

    t1 = time.time()
    verdicts = verifier.verify_many([BundleCheck(b, A.expectation(ctx, key, lm), list(range(gen.groups)))
                                     for ctx, key, b in bundles])
    verify_s = time.time() - t1
    stats = [r.stats for v in verdicts for r in v.rollouts if r.stats]
    checked = sum(len(v.rollouts) for v in verdicts)
    rejected = sum(1 for v in verdicts for r in v.rollouts if not r.ok)
    bundles_rejected = sum(1 for v in verdicts if not v.ok)
    ver_gap = max((s["max_gap"] for s in stats), default=0.0)
    ver_lp = max((s["max_logprob_err"] for s in stats), default=0.0)
    ver_sk = max((s["max_sketch_dist"] for s in stats), default=0)
    ctx0, key0, b0 = bundles[0]
    cli_rc, cli_line = rollproof_verify(b0, ctx0, key0.ss58_address, args.model)

    share = identical / rollouts
    outside = [d for d in differences if not d["within_margin"]]
    console.print(f"identical: {identical}/{rollouts} ({100 * share:.2f}%); max logprob diff {max_lp:.2e}, max sketch "
                  f"diff {max_sketch}; {len(differences)} differ, {len(outside)} outside the margin; verifier: "
                  f"{rejected}/{checked} rollouts rejected; rollproof verify exit {cli_rc}: {cli_line}")
    command = (f"/work/vvenv/bin/python scripts/engine_equality.py --model {args.model} --windows {args.windows} "
               f"--hotkeys {args.hotkeys} --batch {args.batch} --memory-fraction {args.memory_fraction}")
    diff_rows = [[d["window"], d["hotkey"][:8] + "…", d["group"], d["rollout"], d["position"],
                  f"{d['hf_token']} {d['hf_text']!r}", f"{d['vllm_token']} {d['vllm_text']!r}",
                  f"{d['gap_of_vllm_token']:.2e}", "yes" if d["within_margin"] else "NO"] for d in differences]
    md = (f"# vLLM engine vs HF engine: equality ({args.model})\n\n"
          f"Command: `{command}`\n\n"
          f"Same model (base checkpoint, fingerprint {lm.fingerprint.hex()[:16]}…), same window seeds and hotkeys; "
          f"generation params {gen.to_json()['temperature_milli']}/1000 temperature, {gen.groups} groups x "
          f"{gen.group_size} rollouts, at most {gen.max_new_tokens} new tokens. Each (window, hotkey) bundle is built "
          f"by miner.proof.build_groups with the vLLM engine (miner/vllm_engine.py, CPU build) and with the HF engine "
          f"(miner/engine.py, batch {args.batch}).\n\n"
          + md_table(["measure", "value"], [
              ["rollouts compared", rollouts],
              ["identical rollouts (same tokens)", f"{identical} ({100 * share:.2f}%)"],
              ["tokens (vLLM / HF)", f"{tokens['vllm']} / {tokens['hf']}"],
              ["positions from an equal prefix", positions_compared],
              ["max logprob difference vLLM - HF (equal prefixes)", f"{max_lp:.2e}"],
              ["max sketch difference (units)", max_sketch],
              ["rollouts that differ", len(differences)],
              [f"... with vLLM's token outside GUMBEL_MARGIN ({GUMBEL_MARGIN:g})", len(outside)],
              ["Verifier over every vLLM rollout (all groups opened): rejected", f"{rejected} of {checked}"],
              ["... bundles rejected", f"{bundles_rejected} of {len(verdicts)}"],
              ["... max Gumbel gap / logprob error / sketch distance",
               f"{ver_gap:.2e} / {ver_lp:.2e} / {ver_sk}"],
              ["`rollproof verify` on the first vLLM bundle", f"exit {cli_rc}: {cli_line}"],
              ["time: vLLM generation / HF generation / verification",
               f"{gen_s['vllm']:.0f} s / {gen_s['hf']:.0f} s / {verify_s:.0f} s (shared 2-core machine)"],
          ])
          + "\n## Every rollout that differs\n\n"
          + ("None.\n" if not differences else
             "The first differing position, both tokens, and the sampling gap the HF recompute (the validator's "
             "check) gives vLLM's token there: the validator accepts a token whose gap is within GUMBEL_MARGIN.\n\n"
             + md_table(["window", "hotkey", "group", "rollout", "position", "HF token", "vLLM token",
                         "gap of vLLM's token", "within margin"], diff_rows)))
    data = {"model": args.model, "fingerprint": lm.fingerprint.hex(), "generation": gen.to_json(),
            "windows": args.windows, "hotkeys": args.hotkeys, "batch": args.batch, "rollouts": rollouts,
            "identical": identical, "identical_share": share, "tokens": tokens, "positions_compared": positions_compared,
            "max_logprob_diff": max_lp, "max_sketch_diff": max_sketch, "differences": differences,
            "gumbel_margin": GUMBEL_MARGIN, "verifier": {"rollouts": checked, "rejected": rejected,
                                                          "bundles_rejected": bundles_rejected, "max_gap": ver_gap,
                                                          "max_logprob_err": ver_lp, "max_sketch_dist": ver_sk},
            "rollproof_verify": {"exit_code": cli_rc, "last_line": cli_line},
            "seconds": {"model_load": load_s, "engine_start": start_s, **gen_s, "verify": verify_s},
            "environment": environment("cpu")}
    jp, mp = write(f"engine_equality_{args.model.replace(':', '_').replace('/', '_')}", data, md)
    console.print(f"wrote {jp} and {mp}")
    return 0 if rejected == 0 and not outside and cli_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
