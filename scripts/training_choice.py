"""Choice left to a miner over which of its rows are trained on (docs/security.md section 3a).

    python3 scripts/training_choice.py [--model tiny|smollm2] [--hotkeys 3] [--groups 4] [--windows 2]

The trainer trains on the rows of the groups the opening checked in every accepted bundle
(docs/protocol.md section 15). Per hotkey and window, a miner's options are: skip the window, or
commit a bundle. This script builds each hotkey's honest bundle under generation params with
groups = --groups, then every prefix of it (k = 0..groups groups, re-signed), runs the Verifier on
each with the groups its opening picks, and counts the distinct trained row sets a miner can
produce:
  * this protocol: a prefix (k < groups, k = 0 included) is bad_params, so the options are the full
    bundle or nothing: 1 bit per hotkey per window;
  * the rule before (any n_groups accepted): every prefix passes the other checks (its rows are the
    honest rows), so the options were skip or any of the `groups` prefixes: log2(groups + 1) bits.
Over H hotkeys it also counts the distinct trained sets of the whole window and the range of the
trained rows' mean reward a miner controlling all H hotkeys can reach (honest: every bundle in).
Writes reports/training_choice_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

from rich.console import Console

from adversary import lib as A
from report_lib import environment, md_table, write
from rollproof.device import add_device_argument, device_or_exit
from verification.challenge import groups_to_check, opening_round, opening_seed
from verification.constants import GROUPS_CHECKED_PER_MINER
from verification.drand_local import LocalDrand
from verification.environments import REWARD_SCALE
from verification.model import load_model
from verification.verifier import Verifier

SKIP = frozenset()  # the trained rows of a window the miner skips


def options_of(verifier, lm, drand, ctx, key) -> tuple[list[dict], list[frozenset], list[frozenset], dict]:
    """Each prefix's verdict, this protocol's trained-row options, the old rule's options, rewards."""
    full = A.honest(lm, ctx, key)
    rewards = {(key.ss58_address, g.index, r.index): r.reward for g, r in full.rows()}
    o_seed = opening_seed(ctx.netuid, ctx.window, drand.sign(opening_round(drand.info, ctx.block_time + 240)).randomness)
    verdicts, now, before = [], {SKIP}, {SKIP}
    for k in range(lm.generation.groups + 1):
        bundle = A.assemble_bundle(ctx, key, lm.fingerprint, full.groups[:k], lm.generation)
        opened = groups_to_check(o_seed, key.ss58_address, bytes.fromhex(bundle.header.rows_root), k,
                                 GROUPS_CHECKED_PER_MINER) if k else []
        v = verifier.verify(bundle, A.expectation(ctx, key, lm), groups=opened)
        trained = frozenset((key.ss58_address, g, r.index) for g in opened for r in bundle.groups[g].rollouts)
        verdicts.append({"groups": k, "ok": v.ok, "reason": v.reason})
        if v.ok:
            now.add(trained)
        before.add(trained)  # the old verifier accepted any count: the prefix's rows are honest rows
    return verdicts, sorted(now, key=len), sorted(before, key=len), rewards


def window_figures(per_hotkey: list[list[frozenset]], rewards: dict) -> dict:
    """Distinct trained sets over every combination of the hotkeys' options, and the mean reward
    of the trained rows: honest (every hotkey's largest option), least and greatest."""
    sets = set()
    means = []
    for combo in itertools.product(*per_hotkey):
        rows = frozenset().union(*combo)
        sets.add(rows)
        if rows:
            means.append(sum(rewards[r] for r in rows) / len(rows) / REWARD_SCALE)
    honest_rows = frozenset().union(*(max(opts, key=len) for opts in per_hotkey))
    honest = sum(rewards[r] for r in honest_rows) / len(honest_rows) / REWARD_SCALE if honest_rows else float("nan")
    return {"distinct_sets": len(sets), "bits": math.log2(len(sets)), "mean_reward_honest": honest,
            "mean_reward_min": min(means), "mean_reward_max": max(means)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--hotkeys", type=int, default=3)
    ap.add_argument("--groups", type=int, default=4, help="groups per bundle (the generation params' groups)")
    ap.add_argument("--windows", type=int, default=2)
    add_device_argument(ap)
    args = ap.parse_args()
    if args.hotkeys < 1 or args.windows < 1 or args.groups < 1:
        ap.error("--hotkeys, --groups and --windows must be at least 1")
    device = device_or_exit(args.device)
    console = Console()
    lm = load_model(args.model, device)
    lm = lm.with_generation(lm.generation.with_groups(args.groups))
    drand = LocalDrand()
    verifier = Verifier(lm, [drand.info])
    t0 = time.time()
    per_hotkey_rows, windows = [], []
    for w in range(args.windows):
        ctx = A.window_ctx(drand, 7000 + w)
        now_opts, before_opts, rewards = [], [], {}
        for h in range(args.hotkeys):
            key = A.keypair(7000 + 100 * w + h)
            verdicts, now, before, rw = options_of(verifier, lm, drand, ctx, key)
            rewards |= rw
            now_opts.append(now)
            before_opts.append(before)
            per_hotkey_rows.append({"window": w, "hotkey": h, "verdicts": verdicts,
                                    "options_now": len(now), "options_before": len(before),
                                    "bits_now": math.log2(len(now)), "bits_before": math.log2(len(before))})
            console.print(f"window {w} hotkey {h}: accepted prefixes "
                          f"{[v['groups'] for v in verdicts if v['ok']]}, rejected "
                          f"{sorted({v['reason'] for v in verdicts if not v['ok']})}")
        windows.append({"window": w, "now": window_figures(now_opts, rewards),
                        "before": window_figures(before_opts, rewards)})
    elapsed = time.time() - t0

    def worst(rule: str, key: str) -> float:
        return max(r[f"{key}_{rule}"] for r in per_hotkey_rows)

    rows = []
    for rule, label in (("before", "before: any n_groups (a prefix or skip)"),
                        ("now", "this protocol: n_groups = the params' groups (all or skip)")):
        ws = [w[rule] for w in windows]
        rows.append([label, f"{worst(rule, 'options')}", f"{worst(rule, 'bits'):.2f}",
                     f"{max(w['distinct_sets'] for w in ws)} ({max(w['bits'] for w in ws):.2f} bits)",
                     f"{ws[0]['mean_reward_honest']:.3f}",
                     f"{min(w['mean_reward_min'] for w in ws):.3f} .. {max(w['mean_reward_max'] for w in ws):.3f}"])
    headers = ["rule", "options per hotkey", "bits per hotkey per window",
               f"distinct trained sets of {args.hotkeys} hotkeys in a window",
               "trained mean reward, honest (window 0)", "trained mean reward a miner can reach"]
    table = md_table(headers, rows)
    command = (f"python3 scripts/training_choice.py --model {args.model} --hotkeys {args.hotkeys} "
               f"--groups {args.groups} --windows {args.windows}")
    md = (f"# Choice over the trained rows ({args.model}, {args.groups} groups per bundle)\n\n"
          f"Command: `{command}` ({elapsed:.0f} s)\n\n{table}\n"
          "Every prefix shorter than the params' groups (0 included) was rejected `bad_params` by the "
          "Verifier; the full bundle was accepted. Per hotkey the options left are the full bundle or "
          "nothing (1 bit); a miner with H hotkeys chooses among at most 2^H trained sets per window, "
          "and each skipped or sabotaged bundle costs its score for the window.\n")
    data = {"model": args.model, "groups": args.groups, "hotkeys": args.hotkeys, "windows": windows,
            "per_hotkey": per_hotkey_rows, "elapsed_s": elapsed, "environment": environment(device)}
    jp, mp = write(f"training_choice_{args.model}", data, md)
    console.print(md)
    console.print(f"wrote {jp} and {mp}")
    bad = [r for r in per_hotkey_rows if r["options_now"] > 2]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
