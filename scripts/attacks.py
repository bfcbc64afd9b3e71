"""Attack suite: every attack of DESIGN.md section 4, run many times against the Verifier.

    python scripts/attacks.py [--trials 10] [--model tiny] [--groups 2] [--engine hf|vllm]

The model's generation params get groups = --groups (every bundle's group count; the attacks that
need an unopened group open all but the last).

Writes reports/attacks.json and reports/attacks.md: detection rate per attack, honest false
rejections, and for the model-level attacks the honest vs attack distributions of the three
statistical checks (AUC, TPR at an extrapolated FPR of 1e-6). Exit code 1 if any attack went
undetected in any trial or any honest rollout was rejected.

--engine vllm generates the miner side's rollouts (honest ones, and every attack built on them) with
the vLLM engine and writes reports/attacks_vllm.*; the validator side stays the HF recompute. The
model-level attacks whose model vLLM runs (the honest architecture in float32: other model, older
checkpoint, perturbed weights, the cheap model) generate on a vLLM engine of their own, opened from
the attacker's model for that attack's trials (vLLM's CPU build packs linear weights at load and
drops the originals, so weights cannot be swapped into a running engine there); the smaller model
and the bf16/int8 arithmetic cannot run in a float32 vLLM engine of the honest architecture and
generate on HF (the report names the engine of every attack). A missing vLLM: one `error:` line,
exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adversary import lib as A
from engine_args import add_engine_arguments, check_engine_or_exit, engine_suffix, open_engine_or_exit
from report_lib import auc, environment, extrapolated_threshold, md_table, write
from verification import environments
from verification.constants import MAX_BUNDLE_BYTES
from verification.drand_local import LocalDrand
from verification.model import load_model
from verification.verifier import Verifier
from rollproof.device import add_device_argument, device_or_exit

STATS = ("max_sketch_dist", "max_gap", "max_logprob_err")
MEANS = {"max_sketch_dist": "mean_sketch_dist", "max_gap": "mean_gap", "max_logprob_err": "mean_logprob_err"}


class _LastGroupView:
    """A bundle view whose only group is the last one, so a mutation meant for a whole bundle edits
    just the group the opening does not pick."""

    def __init__(self, bundle):
        self.header, self.signature, self.groups = bundle.header, bundle.signature, bundle.groups[-1:]

    def rows(self):
        return [(g, r) for g in self.groups for r in g.rollouts]


def _last_group_only(bundle):
    return _LastGroupView(bundle)


def _shift_prompt(b) -> None:
    """Change the first prompt token (the rows no longer answer the derived problem)."""
    g = b.groups[0]
    g.prompt = g.prompt.copy()
    g.prompt[0] = (int(g.prompt[0]) + 1) % 200


# model-level attacks whose model cannot run in the honest model's float32 vLLM engine: another
# layer count (another engine), or arithmetic other than float32 (bf16, int8)
HF_ONLY = {"2-layer", "bf16", "int8"}


class AttackerEngines:
    """vLLM engines opened from an attacker's model, one per model, until close_all (after each
    attack's trials, so at most one runs beside the honest engine)."""

    def __init__(self, name: str | None, device: str, memory_fraction: float):
        self.name, self.device, self.memory_fraction = name, device, memory_fraction
        self.open: dict[str, object] = {}

    def get(self, key: str, model_lm):
        if self.name is None:
            return None
        if key not in self.open:
            from miner.engines import open_engine

            self.open[key] = open_engine(self.name, model_lm, batch_size=64, device=self.device,
                                         memory_fraction=self.memory_fraction)
        return self.open[key]

    def close_all(self) -> None:
        for engine in self.open.values():
            engine.close()
        self.open.clear()


def build_attacks(lm, drand, engine=None, attacker_engines: AttackerEngines | None = None):
    """(names of the model-level attacks whose statistics are reported, {name: the engine of the
    attacks that do not generate on the miner side's engine}, {name: attack}). `engine`: the miner
    side's generation engine (None: HF); `attacker_engines`: where an attacker's own model generates
    on that engine's kind (None: HF)."""
    variants = {}
    on_hf = {}
    attacker_engines = attacker_engines or AttackerEngines(None, "cpu", 0.1)

    def v(name, make):
        if name not in variants:
            variants[name] = make(lm)
        return variants[name]

    def model_attack(name, make):
        def run(ctx, key):
            model = v(name, make)
            eng = None if name in HF_ONLY else attacker_engines.get(name, model)
            return A.generated_by(model, lm, ctx, key, engine=eng), A.expectation(ctx, key, lm)
        return run

    def mutate(fn):
        return lambda ctx, key: (A.resigned(A.honest(lm, ctx, key, engine=engine), ctx, key, fn),
                                 A.expectation(ctx, key, lm))

    def beacon_attack(make_beacon):
        def run(ctx, key):
            bundle = A.honest(lm, ctx, key, engine=engine)
            bad_ctx = A.with_beacon(ctx, make_beacon(ctx))
            return A.resigned(bundle, bad_ctx, key, lambda b: None), A.expectation(ctx, key, lm)
        return run

    def problem_not_derived(ctx, key):
        other = replace(ctx, block_hash=bytes(32))  # problems from a seed the miner chose
        groups = A.build_groups(lm, other, key.ss58_address, list(range(lm.generation.groups)), engine=engine)
        return A.assemble_bundle(ctx, key, lm.fingerprint, groups, lm.generation), A.expectation(ctx, key, lm)

    def replay_window(ctx, key):
        old = A.window_ctx(drand, ctx.window - 1)
        return A.honest(lm, old, key, engine=engine), A.expectation(ctx, key, lm)

    def replay_hotkey(ctx, key):
        other = A.keypair(10_000 + ctx.window)
        return A.honest(lm, ctx, other, engine=engine), A.expectation(ctx, key, lm)

    def copy_other_miner(ctx, key):
        victim = A.keypair(20_000 + ctx.window)
        stolen = A.honest(lm, ctx, victim, engine=engine)
        return A.resigned(stolen, ctx, key, lambda b: None), A.expectation(ctx, key, lm)

    def credit_theft(ctx, key):
        """Another miner's honest rows (computable without its bundle) in place of the attacker's
        last group (the group count is fixed), which the opening does not pick; only the attacker's
        own groups are opened."""
        n = lm.generation.groups - 1
        own = A.honest(lm, ctx, key, n, engine=engine)
        mine = lm.chat_prompt_ids(environments.problem_for(ctx.problem_seed(key.ss58_address, n), lm.generation)[1].prompt)
        # a victim whose problem is not, by the coincidence of a small problem space, the thief's own
        # problem at the stolen index (then its rows would answer the thief's problem, and computing
        # them costs the thief as much as its own: nothing is stolen)
        for i in range(100):
            victim = A.honest(lm, ctx, A.keypair(30_000 + 100 * ctx.window + i), 1, engine=engine)
            if list(map(int, victim.groups[0].prompt)) != mine:
                break
        stolen = replace(victim.groups[0], index=n)
        bundle = A.assemble_bundle(ctx, key, lm.fingerprint, own.groups + [stolen], lm.generation)
        return bundle, A.expectation(ctx, key, lm), list(range(n))

    def group_count(delta):
        """Training-data choice: a bundle of another group count than the checkpoint's (a prefix of
        the window's problems, none of them, or one more)."""
        def run(ctx, key):
            n = 0 if delta is None else lm.generation.groups + delta
            return A.honest(lm, ctx, key, n, engine=engine), A.expectation(ctx, key, lm)
        return run

    def unopened(fn):
        """An honest bundle edited by fn in its last group, which the opening does not pick."""
        def run(ctx, key):
            bundle = A.honest(lm, ctx, key, engine=engine)
            return (A.resigned(bundle, ctx, key, lambda b: fn(_last_group_only(b))), A.expectation(ctx, key, lm),
                    list(range(len(bundle.groups) - 1)))
        return run

    def cheap_gen(ctx, key):
        cheap = v("tiny:1", A.other_same_shape)
        return (A.cheap_generation_honest_prefill(cheap, lm, ctx, key, engine=attacker_engines.get("tiny:1", cheap)),
                A.expectation(ctx, key, lm))

    def raw(kind):
        def run(ctx, key):
            data = A.encode_bundle(A.honest(lm, ctx, key, engine=engine))
            if kind == "oversized bundle":
                return data + b" " * (MAX_BUNDLE_BYTES + 1 - len(data)), A.expectation(ctx, key, lm)
            if kind == "same bundle, base64 padding bits set":
                groups = 1
                while (malleated := A.padding_bits_set(data)) is None:  # one more group until a field is padded
                    groups += 1
                    data = A.encode_bundle(A.honest(lm, ctx, key, groups, engine=engine))
                return malleated, A.expectation(ctx, key, lm)
            return A.bytes_attacks(data)[kind], A.expectation(ctx, key, lm)
        return run

    model_level = {
        "model swap: other model, same shape": model_attack("tiny:1", A.other_same_shape),
        "model swap: smaller model (2 of 4 layers)": model_attack("2-layer", A.smaller),
        "model swap: older checkpoint (2% weight drift)": model_attack("p2", lambda m: A.perturbed(m, 0.02)),
        "weights perturbed slightly (0.1%)": model_attack("p0.1", lambda m: A.perturbed(m, 0.001)),
        "lower precision: bf16": model_attack("bf16", A.bf16),
        "lower precision: int8": model_attack("int8", A.int8),
        "cheap-model generation + honest prefill": cheap_gen,
    }
    steering = {"steering: every rollout ended early at its closest EOS": lambda ctx, key: (
        A.steered_short(lm, ctx, key, engine=engine), A.expectation(ctx, key, lm))}
    if engine is not None:
        on_hf = {"model swap: smaller model (2 of 4 layers)": "hf", "lower precision: bf16": "hf",
                 "lower precision: int8": "hf"}
    return set(model_level), on_hf, {
        **model_level,
        **steering,
        "tokens edited after generation": mutate(A.edit_token),
        "logprobs edited": mutate(A.edit_logprob),
        "rewards misreported": mutate(A.misreport_reward),
        "advantages misreported": mutate(A.misreport_advantage),
        "problem not derived from the window seed": problem_not_derived,
        "bundle replayed from another window": replay_window,
        "bundle replayed from another hotkey": replay_hotkey,
        "another miner's completions copied": copy_other_miner,
        "credit theft: another miner's rows as an unopened group": credit_theft,
        "group count: a prefix of the window's groups": group_count(-1),
        "group count: one group more than the window's": group_count(+1),
        "group count: no groups (n_groups = 0)": group_count(None),
        "unopened group: rewards misreported": unopened(A.misreport_reward),
        "unopened group: advantages misreported": unopened(A.misreport_advantage),
        "unopened group: problem not derived": unopened(_shift_prompt),
        "forged drand beacon": beacon_attack(A.forged_beacon),
        "stale drand beacon (previous round)": beacon_attack(lambda c: drand.sign(c.beacon.round - 1)),
        "future drand beacon (next round)": beacon_attack(lambda c: drand.sign(c.beacon.round + 5)),
        "relay serving another round's valid beacon": beacon_attack(lambda c: drand.sign(c.beacon.round - 100)),
        "beacon from another drand chain": beacon_attack(lambda c: LocalDrand("attacker").sign(c.beacon.round)),
        "truncated bundle": raw("truncated bundle"),
        "oversized bundle": raw("oversized bundle"),
        "malformed bundle": raw("malformed bundle"),
        "deeply nested bundle (parser stack)": raw("deeply nested bundle (parser stack)"),
        "same bundle, base64 padding bits set": raw("same bundle, base64 padding bits set"),
        "bad signature (byte flipped)": raw("bad signature (byte flipped)"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--honest-trials", type=int, default=None, help="default: 3 x trials")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--groups", type=int, default=2, help="groups per bundle (the model's generation params)")
    ap.add_argument("--quick", action="store_true", help="3 trials: a demonstration run")
    add_device_argument(ap)
    add_engine_arguments(ap)
    args = ap.parse_args()
    if args.groups < 2:
        ap.error("--groups must be at least 2 (the unopened-group attacks leave the last group unopened)")
    check_engine_or_exit(args)
    device = device_or_exit(args.device)
    trials = 3 if args.quick else args.trials
    honest_trials = args.honest_trials or 3 * trials
    console = Console()
    lm = load_model(args.model, device)
    lm = lm.with_generation(lm.generation.with_groups(args.groups))
    drand = LocalDrand()
    verifier = Verifier(lm, [drand.info])
    engine = open_engine_or_exit(args, lm, device)
    try:
        return run_suite(args, lm, drand, verifier, engine, device, trials, honest_trials, console)
    finally:
        if engine is not None:
            engine.close()


def run_suite(args, lm, drand, verifier, engine, device, trials, honest_trials, console) -> int:
    attacker_engines = AttackerEngines(None if engine is None else args.engine, device, args.memory_fraction)
    try:
        return _run_suite(args, lm, drand, verifier, engine, attacker_engines, device, trials, honest_trials, console)
    finally:
        attacker_engines.close_all()


def _run_suite(args, lm, drand, verifier, engine, attacker_engines, device, trials, honest_trials, console) -> int:
    statistical, on_hf, attacks = build_attacks(lm, drand, engine, attacker_engines)
    t0 = time.time()
    results, honest_stats, attack_stats = {}, [], {}
    honest_rejected = honest_rollouts = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("honest", total=honest_trials)
        for t in range(honest_trials):
            ctx, key = A.window_ctx(drand, 1000 + t), A.keypair(t)
            verdict = verifier.verify(A.honest(lm, ctx, key, engine=engine), A.expectation(ctx, key, lm))
            honest_rollouts += len(verdict.rollouts)
            honest_rejected += sum(1 for r in verdict.rollouts if not r.ok)
            honest_stats += [r.stats for r in verdict.rollouts if r.stats]
            progress.advance(task)
        for name, attack in attacks.items():
            task = progress.add_task(name[:40], total=trials)
            detected, reasons, rejected_rows, rows = 0, {}, 0, 0
            for t in range(trials):
                ctx, key = A.window_ctx(drand, 2000 + t), A.keypair(100 + t)
                subject, exp, *opened = attack(ctx, key)  # opened: the groups the opening picks
                groups = opened[0] if opened else None
                verdict = (verifier.verify_bytes(subject, exp, groups=groups) if isinstance(subject, bytes)
                           else verifier.verify(subject, exp, groups=groups))
                detected += not verdict.ok
                reasons[verdict.reason] = reasons.get(verdict.reason, 0) + 1
                rows += len(verdict.rollouts)
                rejected_rows += sum(1 for r in verdict.rollouts if not r.ok)
                attack_stats.setdefault(name, []).extend(r.stats for r in verdict.rollouts if r.stats)
                progress.advance(task)
            attacker_engines.close_all()
            results[name] = {"trials": trials, "detected": detected, "rate": detected / trials, "reasons": reasons,
                             "rollouts": rows, "rollouts_rejected": rejected_rows}
    elapsed = time.time() - t0

    positions = max((s["tokens"] for s in honest_stats), default=1)
    stat_rows = []
    statistics = {}
    for name, stats in attack_stats.items():
        if not stats or name not in statistical:
            continue
        entry = {}
        for key in STATS:
            h = [s[key] for s in honest_stats]
            a = [s[key] for s in stats]
            thr = extrapolated_threshold([s[MEANS[key]] for s in honest_stats], positions)
            tpr = sum(1 for x in a if x > thr) / len(a)
            entry[key] = {"honest_max": max(h), "attack_min": min(a), "attack_median": sorted(a)[len(a) // 2],
                          "auc": auc(h, a), "threshold_fpr_1e-6": thr, "tpr_at_fpr_1e-6": tpr}
        statistics[name] = entry
        stat_rows.append([name] + [f"{entry[k]['auc']:.4f} / {entry[k]['tpr_at_fpr_1e-6']:.3f}" for k in STATS])

    table = Table(title=f"attack suite on {args.model}: {trials} trials each")
    for col in ("attack", "detected", "reasons"):
        table.add_column(col)
    md_rows = []
    for name, r in results.items():
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(r["reasons"].items()))
        table.add_row(name, f"{r['detected']}/{r['trials']}", reasons)
        md_rows.append([name, f"{r['detected']}/{r['trials']} ({100 * r['rate']:.0f}%)", reasons]
                       + ([on_hf.get(name, args.engine)] if engine is not None else []))
    console.print(table)
    console.print(f"honest: {honest_rejected} of {honest_rollouts} rollouts rejected over {honest_trials} bundles; "
                  f"{elapsed:.0f} s")
    all_detected = all(r["rate"] == 1.0 for r in results.values())
    engine_flag = "" if engine is None else f" --engine {args.engine}"
    engine_note = "" if engine is None else (
        f"The miner side's rollouts (honest ones and every attack built on them) come from the {args.engine} engine; "
        "the validator side is the HF recompute. The last column names the engine each attack's generation ran on: "
        "an attacker's own model (other model, older checkpoint, perturbed weights, cheap model) generates on a vLLM "
        "engine opened from that model; the smaller model and the bf16/int8 arithmetic cannot run in a float32 vLLM "
        "engine of the honest architecture and generate on HF.\n\n")
    md = (f"# Attack suite ({args.model}, {trials} trials per attack{', ' + args.engine + ' engine' if engine else ''})\n\n"
          f"Command: `python scripts/attacks.py --trials {trials} --model {args.model}{engine_flag}`\n\n"
          + engine_note
          + md_table(["attack", "detected", "first-failure reasons"] + (["generated on"] if engine else []), md_rows)
          + f"\nHonest: {honest_rejected} of {honest_rollouts} rollouts rejected ({honest_trials} bundles).\n\n"
          + "## Statistical checks: AUC / TPR at FPR 1e-6 (extrapolated), per rollout\n\n"
          + md_table(["attack", "sketch distance", "Gumbel gap", "logprob error"], stat_rows)
          + f"\nHonest maxima: sketch {max(s['max_sketch_dist'] for s in honest_stats)} units, "
            f"Gumbel gap {max(s['max_gap'] for s in honest_stats):.2e}, "
            f"logprob error {max(s['max_logprob_err'] for s in honest_stats):.2e}.\n")
    data = {"model": args.model, "trials": trials, "honest_trials": honest_trials, "honest_rollouts": honest_rollouts,
            "honest_rejected": honest_rejected, "attacks": results, "statistics": statistics,
            "elapsed_s": elapsed, "environment": environment(device), "engine": args.engine,
            "generated_on_hf": sorted(on_hf)}
    jp, mp = write("attacks" + engine_suffix(args), data, md)
    console.print(f"wrote {jp} and {mp}")
    ok = all_detected and honest_rejected == 0
    console.print("[green]every attack detected, no honest rejection[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
