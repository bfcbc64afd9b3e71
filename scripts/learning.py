"""Measured learning through the real path: miners -> validator -> trainer -> checkpoints -> miners.

Runs the local network (embedded chain, local drand, honest miners only, a validator, the trainer)
for N windows with the given model, then evaluates the base model and the last announced checkpoint
on a held-out set (seeds never trained on) with the protocol's seeded sampling, and reports the
paired difference with a 95% interval, the chance baseline, signal rate and mean reward per window,
bytes per checkpoint and wall time. Writes reports/learning.{json,md} and docs/learning.png.

    python3 scripts/learning.py --model smollm2 --windows 14 --groups 4
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from report_lib import environment, md_table, write
from rich.console import Console

from rollproof.learning_curve import checkpoint_table, curve_table, plot_curve
from rollproof.localnet import run_localnet
from trainer.heldout import evaluate, paired_difference
from trainer.service import TrainerConfig
from trainer.step import TrainConfig
from verification.model import load_model
from rollproof.device import add_device_argument, device_or_exit

DOCS = Path(__file__).resolve().parent.parent / "docs"


def final_comparison(lm, store: Path, fingerprint: str, problems: int, rollouts: int) -> dict:
    """Base vs the last checkpoint on the same held-out problems with the same noise (paired): under
    the base task's params and, when the curriculum moved them, under the checkpoint's own."""
    from adapters.checkpoints import find_checkpoint
    from verification.checkpoint_model import load_checkpoint

    manifest, files = find_checkpoint(store, fingerprint)
    final_lm = load_checkpoint(lm, manifest, files)
    out = {"version": manifest.version, "final_params": manifest.generation.to_json()}
    tasks = {"base_task": lm.generation}
    if manifest.generation != lm.generation:
        tasks["checkpoint_task"] = manifest.generation
    for name, params in tasks.items():
        before = evaluate(lm.with_generation(params), params, 1, problems, rollouts=rollouts)
        after = evaluate(final_lm.with_generation(params), params, 1, problems, rollouts=rollouts)
        d = paired_difference(after, before)
        out[name] = {"base": before.mean, "final": after.mean, "chance": before.chance, "difference": d.mean,
                     "low": d.low, "high": d.high, "n": d.n, "base_correct": before.correct_share,
                     "final_correct": after.correct_share,
                     "params": "; ".join(f"{e['params']} x{e['weight']}" for e in params.to_json()["environments"])}
    return out


def result_from_journals(lm, root: Path):
    """A LocalnetResult rebuilt from the trainer's and validator's journals of a finished run."""
    import json

    from rollproof.localnet import LocalnetResult
    from trainer.service import Publication, WindowTraining
    from verification.constants import ACTIVATION_WINDOWS

    result = LocalnetResult()
    result.versions[lm.fingerprint.hex()] = 0
    for path in sorted((root / "trainer" / "windows").glob("*.json"), key=lambda p: int(p.stem)):
        rec = WindowTraining(**json.loads(path.read_text()))
        result.training.append(rec)
        report = root / "validator" / "windows" / str(rec.window) / "report.json"
        result.checkpoints[rec.window] = json.loads(report.read_text())["model_fingerprint"]
    pubs = sorted((root / "trainer" / "published").glob("*.json"), key=lambda p: int(p.stem))
    for path in pubs:
        pub = Publication(**json.loads(path.read_text()))
        result.publications.append(pub)
        if pub.stage == "announced":
            result.versions[pub.fingerprint] = pub.version
    trained = {r.window for r in result.training}
    for pub in result.publications:
        # a candidate is made after training window w, while the chain is in window w + 1, for
        # window w + 1 + ACTIVATION_WINDOWS
        w = pub.from_window - 1 - ACTIVATION_WINDOWS
        if w in trained:
            result.published_at[w] = pub
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--windows", type=int, default=18)
    ap.add_argument("--groups", type=int, default=4, help="groups per honest miner per window")
    ap.add_argument("--lr", type=float, default=1e-4, help="1e-4: measured here (docs/security.md section 6)")
    ap.add_argument("--gate-problems", type=int, default=32, help="held-out problems of the trainer's gate")
    ap.add_argument("--final-problems", type=int, default=96, help="held-out problems of the final comparison")
    ap.add_argument("--final-rollouts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--name", default="learning")
    ap.add_argument("--from-workdir", type=Path, default=None,
                    help="do not run the network: rebuild the report from a finished run's journals")
    add_device_argument(ap)
    args = ap.parse_args()
    device = device_or_exit(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    t0 = time.time()
    lm = load_model(args.model, device)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="rollproof-learning-"))
    cfg = TrainerConfig(heldout_problems=args.gate_problems, train=TrainConfig(lr=args.lr))

    def show(res, names, info):
        rec, pub = info.get("training"), info.get("publication")
        line = f"window {res.window}: checkpoint v{info.get('version')}"
        if rec is not None:
            line += (f", {rec.rows} rows, mean reward {rec.mean_reward:.3f}, signal {rec.signal_rate:.0%}, "
                     f"step {'applied' if rec.step and rec.step['applied'] else rec.note}")
        if pub is not None:
            line += f"; v{pub.version} {pub.stage} (held-out {pub.heldout:.3f} vs {pub.parent_heldout:.3f})"
        console.print(f"{line}  [{time.time() - t0:.0f} s]")

    if args.from_workdir is not None:
        root = args.from_workdir
        result = result_from_journals(lm, root)
    else:
        result = run_localnet(lm, root, windows=args.windows, n_groups=args.groups, cheaters=False,
                              trainer_config=cfg, on_window=show)
    loop_s = time.time() - t0
    console.print(curve_table(result))
    console.print(checkpoint_table(result))
    announced = [p for p in result.publications if p.stage == "announced"]
    final = None
    if announced:
        final = final_comparison(lm, root / "store", announced[-1].fingerprint, args.final_problems,
                                 args.final_rollouts)
        result.base_heldout, result.chance = final["base_task"]["base"], final["base_task"]["chance"]
        for task, f in final.items():
            if task in ("base_task", "checkpoint_task"):
                console.print(f"held-out on the {task.replace('_', ' ')} ({args.final_problems} problems x "
                              f"{args.final_rollouts}): base {f['base']:.3f} -> v{final['version']} {f['final']:.3f}, "
                              f"paired {f['difference']:+.3f} [{f['low']:+.3f}, {f['high']:+.3f}] (95%), "
                              f"chance {f['chance']:.3f}")
    png = plot_curve(result, DOCS / f"{args.name}.png")
    wall = time.time() - t0
    data = {
        "model": args.model, "windows": args.windows, "groups_per_miner": args.groups, "lr": args.lr,
        "generation": lm.generation.to_json(), "wall_s": wall, "loop_s": loop_s, "final": final,
        "base_heldout": result.base_heldout, "chance": result.chance, "ok": result.ok, "problems": result.problems,
        "per_window": [{"window": t.window, "rows": t.rows, "groups": t.groups, "signal_rate": t.signal_rate,
                        "mean_reward": t.mean_reward, "applied": bool(t.step and t.step["applied"]),
                        "grad_norm": t.step["grad_norm"] if t.step else None,
                        "checkpoint": result.versions.get(result.checkpoints.get(t.window, ""))}
                       for t in result.training],
        "checkpoints": [p.__dict__ for p in result.publications],
        "environment": environment(device),
    }
    rows = [[str(r["window"]), f"v{r['checkpoint']}", str(r["rows"]), f"{r['mean_reward']:.3f}",
             f"{r['signal_rate']:.0%}", "yes" if r["applied"] else "no"] for r in data["per_window"]]
    md = (f"# Learning through the real path ({args.model}, {args.windows} windows, {args.groups} groups x 2 honest "
          f"miners per window)\n\n`python3 scripts/learning.py --model {args.model} --windows {args.windows} "
          f"--groups {args.groups}`; wall time {wall / 60:.1f} min on {environment()['threads']} threads.\n\n")
    if final:
        for task, f in final.items():
            if task not in ("base_task", "checkpoint_task"):
                continue
            md += (f"Held-out on the {task.replace('_', ' ')} (params {f['params']}; {args.final_problems} problems x "
                   f"{args.final_rollouts} rollouts, seeded sampling, the same problems and noise for both): base "
                   f"**{f['base']:.3f}** -> v{final['version']} **{f['final']:.3f}**; paired difference "
                   f"**{f['difference']:+.3f}** (95% interval [{f['low']:+.3f}, {f['high']:+.3f}]); chance baseline "
                   f"{f['chance']:.3f}; fully correct rollouts {f['base_correct']:.1%} -> {f['final_correct']:.1%}.\n\n")
    else:
        md += "No checkpoint was announced.\n\n"
    md += md_table(["window", "checkpoint", "trained rows", "mean reward", "signal rate", "step"], rows)
    md += "\n\n" + md_table(["version", "from window", "held-out", "parent", "difference", "bytes", "stage"],
                            [[str(p.version), str(p.from_window), f"{p.heldout:.3f}", f"{p.parent_heldout:.3f}",
                              f"{p.difference:+.3f} ± {p.half_width:.3f}", str(p.bytes), p.stage]
                             for p in result.publications])
    md += f"\n\n![learning curve](../docs/{png.name})\n"
    write(args.name, data, md)
    console.print(f"wrote reports/{args.name}.json, reports/{args.name}.md and {png}")


if __name__ == "__main__":
    main()
