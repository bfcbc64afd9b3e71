"""A validator's window, verified three ways side by side in one run on the same bundles:

  * per bundle: Verifier.verify on each miner's bundle with at most --group-rows rollouts per
    recompute forward (one forward per checked group of 8: what the validator ran before);
  * window, validator default: Verifier.verify_many over every bundle (the validator's window
    scoring) with verification.model.default_batch_rows rollouts per forward (16 on a CPU), taken
    from any groups and miners;
  * window, memory bound only: the same with as many rollouts per forward as the memory bound
    (--max-batch-mib) allows (an accelerator's default).

All give the same verdicts (checked here, rollout by rollout: ok, reason, failed checks); a quarter
of the miners cheat (one edited token per rollout, re-signed) so that rejections are part of the
work. Times are medians of interleaved repeats (the order rotates, so machine load that comes and
goes hits every way alike); speed-ups are medians of the per-repeat ratios to the per-bundle way.

    python scripts/validator_batching.py [--model tiny|smollm2] [--miners 16] [--groups 4] [--repeats 3] [--threads N]

Writes reports/validator_batching_<model>[_<N>threads].{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from rich.console import Console

from adversary import lib as A
from report_lib import environment, md_table, write
from rollproof.device import add_device_argument, add_threads_argument, threads_and_device_or_exit
from verification.constants import GROUPS_CHECKED_PER_MINER
from verification.drand_local import LocalDrand
from verification.model import RECOMPUTE_BATCH_BYTES, RecomputeRow, default_batch_rows, load_model, plan_batches
from verification.verifier import BundleCheck, Verifier


def same_verdicts(a, b) -> bool:
    return (a.ok, a.reason) == (b.ok, b.reason) and [(r.group, r.rollout, r.ok, r.reason, r.failed) for r in a.rollouts] \
        == [(r.group, r.rollout, r.ok, r.reason, r.failed) for r in b.rollouts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--miners", type=int, default=16)
    ap.add_argument("--groups", type=int, default=GROUPS_CHECKED_PER_MINER, help="groups per bundle (all checked)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--group-rows", type=int, default=8, help="rollouts per forward of the per-bundle way")
    ap.add_argument("--max-batch-mib", type=int, default=RECOMPUTE_BATCH_BYTES >> 20,
                    help="memory bound of one batched forward")
    add_threads_argument(ap)
    add_device_argument(ap)
    args = ap.parse_args()
    device = threads_and_device_or_exit(args)
    console = Console()
    lm = load_model(args.model, device)
    lm = lm.with_generation(lm.generation.with_groups(args.groups))  # every bundle holds the checkpoint's groups
    drand = LocalDrand()
    ctx = A.window_ctx(drand, 9100)
    t = time.perf_counter()
    checks = []
    for i in range(args.miners):
        key = A.keypair(100 + i)
        bundle = A.honest(lm, ctx, key)
        if i % 4 == 3:
            bundle = A.resigned(bundle, ctx, key, A.edit_token)
        checks.append(BundleCheck(bundle, A.expectation(ctx, key, lm)))
    generation_s = time.perf_counter() - t
    rollouts = sum(len(g.rollouts) for c in checks for g in c.bundle.groups)
    tokens = sum(len(r.completion) for c in checks for _, r in c.bundle.rows())
    default_rows = default_batch_rows(device)
    verifiers = {"per_bundle": Verifier(lm, [drand.info], batch_size=args.group_rows),
                 "window_default": Verifier(lm, [drand.info], batch_size=default_rows,
                                            max_batch_bytes=args.max_batch_mib << 20),
                 "window_memory_bound": Verifier(lm, [drand.info], batch_size=None,
                                                 max_batch_bytes=args.max_batch_mib << 20)}
    rows = [RecomputeRow(g.prompt.tolist(), r.completion, r.completion) for c in checks
            for g in c.bundle.groups for r in g.rollouts]
    forwards = {"per_bundle": sum(-(-len(c.bundle.groups) * len(c.bundle.groups[0].rollouts) // args.group_rows)
                                  for c in checks)}
    for name in ("window_default", "window_memory_bound"):
        v = verifiers[name]
        forwards[name] = len(plan_batches(lm, rows, batch_size=v.batch_size, max_bytes=v.max_batch_bytes))
    ways = {"per_bundle": lambda: [verifiers["per_bundle"].verify(c.bundle, c.expected) for c in checks],
            "window_default": lambda: verifiers["window_default"].verify_many(checks),
            "window_memory_bound": lambda: verifiers["window_memory_bound"].verify_many(checks)}
    times: dict[str, list[float]] = {n: [] for n in ways}
    cpu: dict[str, list[float]] = {n: [] for n in ways}
    verdicts = {}
    names = list(ways)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            verdicts[name] = ways[name]()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
        console.print(f"repeat {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in ways))
    equal = all(same_verdicts(a, b) for name in names[1:] for a, b in zip(verdicts["per_bundle"], verdicts[name]))
    if not equal:
        raise AssertionError("a batched window's verdicts differ from the per-bundle verdicts")
    rejected = sum(1 for v in verdicts["per_bundle"] if not v.ok)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    speedup = {k: statistics.median([a / b for a, b in zip(times["per_bundle"], times[k])]) for k in names}
    cpu_speedup = {k: statistics.median([a / b for a, b in zip(cpu["per_bundle"], cpu[k])]) for k in names}
    result = {"model": args.model, "miners": args.miners, "groups_per_bundle": args.groups, "rollouts": rollouts,
              "tokens": tokens, "rejected_bundles": rejected, "repeats": args.repeats, "times_s": times,
              "cpu_times_s": cpu, "cpu_speedup": cpu_speedup,
              "median_s": med, "speedup": speedup, "forwards": forwards, "group_rows": args.group_rows,
              "default_rows": default_rows, "max_batch_bytes": args.max_batch_mib << 20,
              "generation_s": generation_s, "verdicts_equal": equal,
              "environment": environment(device)}
    labels = {"per_bundle": f"per bundle ({args.group_rows} rollouts per forward)",
              "window_default": f"window, validator default ({default_rows or 'memory bound'} rollouts per forward)",
              "window_memory_bound": f"window, memory bound only (<= {args.max_batch_mib} MiB per forward)"}
    table = md_table(["way", "forwards", "wall time (s, median)", "CPU time (s, median)", "verified rollouts/s",
                      "speed-up (wall)", "speed-up (CPU)"],
                     [[labels[k], forwards[k], f"{med[k]:.2f}", f"{cpu_med[k]:.2f}", f"{rollouts / med[k]:.1f}",
                       f"{speedup[k]:.2f}x", f"{cpu_speedup[k]:.2f}x"] for k in names])
    md = (f"# Validator window: per-bundle vs batched recompute ({args.model})\n\n"
          f"Command: `python scripts/validator_batching.py --model {args.model} --miners {args.miners} "
          f"--groups {args.groups} --repeats {args.repeats}{'' if args.threads is None else f' --threads {args.threads}'}`\n\n"
          f"{args.miners} miners x {args.groups} checked groups x {lm.generation.group_size} rollouts = {rollouts} "
          f"rollouts ({tokens} tokens), {rejected} bundles rejected (edited tokens), {torch.get_num_threads()} "
          f"threads on {environment(device)['device']}. Medians of {args.repeats} interleaved repeats; verdicts "
          f"equal rollout by rollout: {equal}. Speed-ups: medians of the per-repeat ratios to the per-bundle way, "
          "by wall time and by this process's CPU time.\n\n" + table)
    name = f"validator_batching_{args.model.replace(':', '_').replace('/', '_')}"
    jp, mp = write(name + ("" if args.threads is None else f"_{args.threads}threads"), result, md)
    console.print(md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
