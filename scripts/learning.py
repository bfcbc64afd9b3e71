"""Measured learning through the real path (miners -> validator -> trainer -> checkpoints -> miners),
graded against greedy decoding on problems the run never trained on.

Per run: the local network (embedded chain, local drand, honest miners only, a validator, the
trainer) for up to --windows windows within --time-budget-min minutes (no window is started that
the budget cannot fit, judged by the slowest window so far), then an evaluation of the base model
against the announced checkpoints (trainer/evaluation.py) on three tasks:
  - the training mix (the final checkpoint's generation params),
  - the TARGET task (--target; the issue's target is measured on it),
  - a TRANSFER task the loop never trains on (--transfer), reported either way.
Problems come from the evaluation seed space (one sequence per task), minus every draw whose
prompt the run trained on or an earlier draw repeats (a task with more than 10% of such draws is
"not a measure" and gets no verdict). Greedy accuracy for the base, the final checkpoint and (on
the target) every announced checkpoint; sampled accuracy (seeded sampling at the task's
temperature) for the base and the final checkpoint only; each paired against the base with a 95%
interval, beside the chance baseline. --runs N repeats the whole run with another local drand
secret per run (other beacons: other problems, other sampling noise, other opened groups) and
reports the spread of the target's greedy gain. Writes reports/<name>.{json,md} and docs/<name>.png.

    python3 scripts/learning.py --model smollm2 --windows 18 --groups 4 --runs 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from report_lib import environment, md_table
from rich.console import Console

from rollproof.device import add_device_argument, device_or_exit
from rollproof.learning_curve import checkpoint_table, curve_table, plot_curve
from rollproof.localnet import NETUID, run_localnet
from trainer.evaluation import TaskEvaluation, evaluate_task, task_params, trained_prompts, verdict
from trainer.service import TrainerConfig
from trainer.step import TrainConfig
from verification.errors import EnvironmentSpecError
from verification.model import load_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = "add:min_digits=2,max_digits=2"  # two 2-digit terms: SmolLM2 base greedy ~0.34 (issue 28)
# reasoning-gym chain_sum, 2 terms of 1-2 digits with + or -: never trained; base greedy 0.29 on 48 problems
# (reports/task_library.md). Its ~20,000 problems leave 128 draws distinct; the 1-digit form (200 problems)
# repeated 37 of 128 draws in the first measured run: not a measure.
DEFAULT_TRANSFER = "rg_chain_sum:max_digits=2"
RUN_FACTS = "run.json"  # in each run's directory: the network loop's facts, read back by --from-workdir


def run_drand_seed(run: int) -> str | None:
    """Run 0 keeps the local drand's default secret (the runs before --runs existed); run r > 0 signs
    its beacons with the secret "rollproof-learning-run-r": every window's seed differs, so do the
    miners' problems, their sampling noise and the validator's opened groups."""
    return None if run == 0 else f"rollproof-learning-run-{run}"


def fits_budget(elapsed_s: float, window_s: list[float], budget_s: float) -> bool:
    """Whether another window fits the budget, judged by the slowest window so far."""
    return elapsed_s + (max(window_s) if window_s else 0.0) <= budget_s


def result_from_journals(lm, root: Path):
    """A LocalnetResult rebuilt from the trainer's and validator's journals of a finished run."""
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
    # the journal's <version>.json, not the records beside them (<version>.training.json)
    pubs = sorted((p for p in (root / "trainer" / "published").glob("*.json") if p.stem.isdigit()),
                  key=lambda p: int(p.stem))
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


def evaluate_run(lm, root: Path, result, tasks: list[tuple[str, object]], *, problems: int, rollouts: int,
                 batch_size: int) -> tuple[list[TaskEvaluation], dict]:
    """The evaluation of one finished run. tasks: (role, params or None for the final checkpoint's own)."""
    from adapters.checkpoints import find_checkpoint
    from verification.checkpoint_model import load_checkpoint

    announced = [p for p in result.publications if p.stage == "announced"]
    fingerprints = {p.version: p.fingerprint for p in announced}
    versions = [p.version for p in announced]
    cache: dict[int, object] = {}

    def load(version: int):
        if version not in cache:
            if versions and version != versions[-1]:
                return load_checkpoint(lm, *find_checkpoint(root / "store", fingerprints[version]))
            cache[version] = load_checkpoint(lm, *find_checkpoint(root / "store", fingerprints[version]))
        return cache[version]

    trained = trained_prompts(root / "validator")
    mix = load(versions[-1]).generation if versions else lm.generation
    out = []
    for role, params in tasks:
        out.append(evaluate_task(role, params or mix, lm, versions, load, trained.prompts, netuid=NETUID,
                                 problems=problems, rollouts=rollouts, greedy_every=role == "target",
                                 batch_size=batch_size))
    return out, {"trained_prompts": len(trained.prompts), "windows_read": trained.windows,
                 "unreadable": trained.unreadable}


def run_record(run: int, result, evals: list[TaskEvaluation], trained: dict, loop_s: float, eval_s: float,
               windows_asked: int, stopped_by_budget: bool) -> dict:
    """One run's figures, as the report's JSON holds them."""
    target = next(e for e in evals if e.role == "target")
    met, line = verdict(target)
    return {
        "run": run, "drand_seed": run_drand_seed(run), "loop_s": loop_s, "eval_s": eval_s,
        "windows_asked": windows_asked, "windows_run": len(result.training), "stopped_by_budget": stopped_by_budget,
        "ok": result.ok, "problems": result.problems, "gate_base_heldout": result.base_heldout,
        "gate_chance": result.chance, "trained": trained,
        "per_window": [{"window": t.window, "rows": t.rows, "groups": t.groups, "signal_rate": t.signal_rate,
                        "mean_reward": t.mean_reward, "applied": bool(t.step and t.step["applied"]),
                        "grad_norm": t.step["grad_norm"] if t.step else None,
                        "checkpoint": result.versions.get(result.checkpoints.get(t.window, ""))}
                       for t in result.training],
        "checkpoints": [{**p.__dict__, "greedy": getattr(p, "greedy", None),
                         "parent_greedy": getattr(p, "parent_greedy", None)} for p in result.publications],
        "evaluation": [{**asdict(e), "n": e.n} for e in evals],
        "target_met": met, "verdict": line,
        "target_gain": target.greedy.difference if target.greedy and target.measure else None,
    }


def write_run_facts(root: Path, run: int, loop_s: float, windows_asked: int, stopped_by_budget: bool) -> None:
    """The network loop's facts beside its journals, so that --from-workdir reports them as they were."""
    (root / RUN_FACTS).write_text(json.dumps({"run": run, "loop_s": loop_s, "windows_asked": windows_asked,
                                              "stopped_by_budget": stopped_by_budget}))


def read_run_facts(root: Path) -> dict:
    path = root / RUN_FACTS
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: --from-workdir needs a run directory this script wrote "
                         "(its loop time and window count are read from it, never guessed)")
    facts = json.loads(path.read_text())
    missing = {"run", "loop_s", "windows_asked", "stopped_by_budget"} - set(facts)
    if missing:
        raise SystemExit(f"error: {path} lacks {sorted(missing)}")
    return facts


def combine_reports(paths: list[Path], out: Path, name: str) -> dict:
    """One report of the runs in several of this script's JSON reports (runs measured in separate
    invocations, e.g. --first-run 1 after a first run): the runs side by side and their spread."""
    sources = []
    for path in paths:
        try:
            sources.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: --combine {path}: {exc}") from None
    runs = sorted((r for d in sources for r in d["runs"]), key=lambda r: r["run"])
    indices = [r["run"] for r in runs]
    if len(set(indices)) != len(indices):
        raise SystemExit(f"error: --combine: run indices repeat across the reports: {indices}")
    data = {**sources[0], "runs": runs, "spread": spread(runs),
            "command": " ; ".join(d["command"] for d in sources),
            "sources": [{"path": str(p), "command": d["command"], "args": d["args"]} for p, d in zip(paths, sources)]}
    md = render_markdown(data)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    (out / "reports" / f"{name}.json").write_text(json.dumps(data, indent=1))
    (out / "reports" / f"{name}.md").write_text(md)
    print(f"wrote {out / 'reports' / name}.json and .md ({len(runs)} runs)")
    return data


def spread(runs: list[dict]) -> dict | None:
    """Mean, min and max over runs of the target's greedy gain (runs where it is a measure)."""
    gains = [r["target_gain"] for r in runs if r["target_gain"] is not None]
    if not gains:
        return None
    return {"runs": len(gains), "mean": float(np.mean(gains)), "min": float(min(gains)), "max": float(max(gains)),
            "met": sum(1 for r in runs if r["target_met"])}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _diff(c: dict | None) -> str:
    return "-" if c is None else f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def evaluation_rows(evals: list[dict]) -> list[list[str]]:
    rows = []
    for e in evals:
        g, s = e["greedy"], e["sampled"]
        rows.append([e["role"], e["label"] + ("" if e["measure"] else " (**not a measure**)"), str(e["n"]),
                     f"{e['dropped_trained']} trained, {e['dropped_repeat']} repeats of {e['drawn']}",
                     _pct(g and g["base"]), _pct(g and g["final"]), _diff(g),
                     _pct(s and s["base"]), _pct(s and s["final"]), _diff(s), f"{e['chance']:.3f}"])
    return rows


def render_markdown(data: dict) -> str:
    """The report: verdict, spread over runs, and per run the evaluation table, greedy per checkpoint
    on the target, the checkpoints' gate figures and the windows' signal."""
    a = data["args"]
    md = (f"# Learning measured against greedy ({a['model']}, up to {a['windows']} windows within "
          f"{a['time_budget_min']} min per run, {a['groups']} groups x 2 honest miners per window, "
          f"{len(data['runs'])} run(s))\n\n`{data['command']}`\n\n")
    md += ("Evaluation problems: the evaluation seed space (one sequence per task, disjoint from the miners' and "
           f"the gate's), {a['eval_problems']} draws per task minus those whose prompt the run trained on or an "
           "earlier draw repeats (more than 10% dropped: not a measure, no verdict). Greedy: the base, the final "
           "checkpoint and, on the target, every announced checkpoint; sampled "
           f"({a['eval_rollouts']} rollouts per problem, seeded sampling at the task's temperature): the base and "
           "the final checkpoint only. Differences are final - base on the same problems, paired 95% intervals.\n\n")
    for r in data["runs"]:
        md += f"**Run {r['run']}**: {r['verdict']}\n\n"
    if data["spread"]:
        s = data["spread"]
        md += (f"Greedy gain on the target over {s['runs']} run(s): mean {100 * s['mean']:+.1f} points, min "
               f"{100 * s['min']:+.1f}, max {100 * s['max']:+.1f}; target met in {s['met']} of {len(data['runs'])}.\n\n")
    if len(data["runs"]) > 1:
        md += md_table(["run", "drand secret", "windows", "checkpoints announced", "target base greedy",
                        "target final greedy", "gain [95%]", "met"],
                       [[str(r["run"]), r["drand_seed"] or "(default)", str(r["windows_run"]),
                         str(sum(1 for c in r["checkpoints"] if c["stage"] == "announced")),
                         _pct(t["greedy"] and t["greedy"]["base"]), _pct(t["greedy"] and t["greedy"]["final"]),
                         _diff(t["greedy"]), {True: "yes", False: "no", None: "no verdict"}[r["target_met"]]]
                        for r in data["runs"] for t in [next(e for e in r["evaluation"] if e["role"] == "target")]])
        md += "\n"
    for r in data["runs"]:
        md += (f"## Run {r['run']} (drand secret {r['drand_seed'] or '(default)'})\n\nWall time: network loop "
               f"{r['loop_s'] / 60:.1f} min ({r['windows_run']} of {r['windows_asked']} windows"
               f"{'; stopped by the time budget' if r['stopped_by_budget'] else ''}), evaluation "
               f"{r['eval_s'] / 60:.1f} min. Trained prompts read from {r['trained']['windows_read']} windows' "
               f"accepted rows: {r['trained']['trained_prompts']} distinct"
               f"{'; unreadable: ' + '; '.join(r['trained']['unreadable']) if r['trained']['unreadable'] else ''}."
               f"{' Problems: ' + '; '.join(r['problems']) if r['problems'] else ''}\n\n")
        md += md_table(["role", "task", "n", "dropped", "base greedy", "final greedy", "greedy diff [95%]",
                        "base sampled", "final sampled", "sampled diff [95%]", "chance"],
                       evaluation_rows(r["evaluation"]))
        target = next(e for e in r["evaluation"] if e["role"] == "target")
        md += ("\nGreedy accuracy on the target per checkpoint: "
               + ", ".join(f"v{v} {acc:.3f}" for v, acc in sorted(target["greedy_per_checkpoint"].items(),
                                                                  key=lambda kv: int(kv[0]))) + "\n\n")
        md += md_table(["version", "from window", "gate held-out (sampled)", "parent", "difference",
                        "gate greedy", "parent greedy", "bytes", "stage"],
                       [[str(p["version"]), str(p["from_window"]), f"{p['heldout']:.3f}", f"{p['parent_heldout']:.3f}",
                         f"{p['difference']:+.3f} ± {p['half_width']:.3f}", _pct(p["greedy"]), _pct(p["parent_greedy"]),
                         str(p["bytes"]), p["stage"]] for p in r["checkpoints"]])
        md += "\n" + md_table(["window", "checkpoint", "trained rows", "mean reward", "signal rate", "step"],
                              [[str(w["window"]), f"v{w['checkpoint']}", str(w["rows"]), f"{w['mean_reward']:.3f}",
                                f"{w['signal_rate']:.0%}", "yes" if w["applied"] else "no"] for w in r["per_window"]])
        md += "\n"
    if data.get("png"):
        md += f"![learning curve, run 0](../docs/{data['png']})\n"
    return md


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--windows", type=int, default=18, help="windows per run at most (see --time-budget-min)")
    ap.add_argument("--time-budget-min", type=float, default=60.0,
                    help="per run: no window is started that would end past this many minutes of the network loop")
    ap.add_argument("--runs", type=int, default=1, help="whole runs, each with its own local drand secret")
    ap.add_argument("--groups", type=int, default=4, help="groups per honest miner per window")
    ap.add_argument("--lr", type=float, default=1e-4, help="1e-4: measured here (docs/security.md section 6)")
    ap.add_argument("--gate-problems", type=int, default=32, help="held-out problems of the trainer's gate")
    ap.add_argument("--gate-margin", type=float, default=TrainerConfig.gate_margin)
    ap.add_argument("--publish-every", type=int, default=TrainerConfig.publish_every,
                    help="applied steps between candidates")
    ap.add_argument("--train-task", default=None,
                    help="the network's base generation params (same forms as --target; default: the model's own, "
                         "BASE_GENERATION)")
    ap.add_argument("--target", default=DEFAULT_TARGET,
                    help="the target task: generation-params JSON or ENV[:key=value,...] (default %(default)s)")
    ap.add_argument("--transfer", default=DEFAULT_TRANSFER,
                    help="a task the loop never trains on, same forms (default %(default)s)")
    ap.add_argument("--eval-problems", type=int, default=128, help="evaluation draws per task")
    ap.add_argument("--eval-rollouts", type=int, default=4, help="sampled rollouts per problem (0: greedy only)")
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="runs go to WORKDIR/run-N")
    ap.add_argument("--name", default="learning")
    ap.add_argument("--out", type=Path, default=ROOT, help="writes OUT/reports/NAME.{json,md} and OUT/docs/NAME.png")
    ap.add_argument("--from-workdir", type=Path, default=None,
                    help="do not run the network: evaluate one finished run's directory (a WORKDIR/run-N)")
    ap.add_argument("--first-run", type=int, default=0,
                    help="index of the first run (its drand secret and directory run-K): adds runs to a workdir")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                    help="run nothing: one report (--name) of the runs in these reports' JSON files")
    add_device_argument(ap)
    args = ap.parse_args(argv)
    if args.combine:
        return combine_reports(args.combine, args.out, args.name)
    device = device_or_exit(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    t0 = time.time()
    lm = load_model(args.model, device)
    tasks = []
    for role, flag, spec in (("train", "--train-task", args.train_task), ("target", "--target", args.target),
                             ("transfer", "--transfer", args.transfer)):
        if spec is None:
            continue
        try:
            params = task_params(spec, lm.generation)
        except EnvironmentSpecError as exc:
            print(f"error: {flag} {spec}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if role == "train":
            lm = lm.with_generation(params)
        else:
            tasks.append((role, params))
    tasks.insert(0, ("training mix", None))
    if lm.generation.groups != args.groups:  # the network's base, as run_localnet makes it: checkpoints name it
        lm = lm.with_generation(lm.generation.with_groups(args.groups))
    base_root = args.workdir or Path(tempfile.mkdtemp(prefix="rollproof-learning-"))
    cfg = TrainerConfig(heldout_problems=args.gate_problems, gate_margin=args.gate_margin,
                        publish_every=args.publish_every, train=TrainConfig(lr=args.lr))
    budget_s = args.time_budget_min * 60
    runs, first_result = [], None
    for run in range(args.first_run, args.first_run + (1 if args.from_workdir else args.runs)):
        root = args.from_workdir or base_root / f"run-{run}"
        start, window_s, marks, stopped = time.time(), [], [time.time()], []

        def show(res, names, info, run=run, start=start, window_s=window_s, marks=marks):
            now = time.time()
            window_s.append(now - marks[-1])
            marks.append(now)
            rec, pub = info.get("training"), info.get("publication")
            line = f"run {run} window {res.window}: checkpoint v{info.get('version')}"
            if rec is not None:
                line += (f", {rec.rows} rows, mean reward {rec.mean_reward:.3f}, signal {rec.signal_rate:.0%}, "
                         f"step {'applied' if rec.step and rec.step['applied'] else rec.note}")
            if pub is not None:
                line += f"; v{pub.version} {pub.stage} (held-out {pub.heldout:.3f} vs {pub.parent_heldout:.3f})"
            console.print(f"{line}  [{now - start:.0f} s]")

        def keep_going(window, start=start, window_s=window_s, stopped=stopped):
            if fits_budget(time.time() - start, window_s, budget_s):
                return True
            stopped.append(window)
            console.print(f"run {run}: window {window} not started: the slowest window so far "
                          f"({max(window_s):.0f} s) would end past the {args.time_budget_min:g}-minute budget")
            return False

        if args.from_workdir is not None:
            result = result_from_journals(lm, root)
            facts = read_run_facts(root)
            run, loop_s, windows_asked, by_budget = (facts["run"], facts["loop_s"], facts["windows_asked"],
                                                     facts["stopped_by_budget"])
        else:
            result = run_localnet(lm, root, windows=args.windows, n_groups=args.groups, cheaters=False,
                                  trainer_config=cfg, on_window=show, keep_going=keep_going,
                                  drand_seed=run_drand_seed(run))
            loop_s, windows_asked, by_budget = time.time() - start, args.windows, bool(stopped)
            write_run_facts(root, run, loop_s, windows_asked, by_budget)
        console.print(curve_table(result))
        console.print(checkpoint_table(result))
        t_eval = time.time()
        evals, trained = evaluate_run(lm, root, result, tasks, problems=args.eval_problems,
                                      rollouts=args.eval_rollouts, batch_size=args.eval_batch)
        record = run_record(run, result, evals, trained, loop_s, time.time() - t_eval, windows_asked, by_budget)
        console.print(f"run {run}: {record['verdict']}")
        runs.append(record)
        first_result = first_result or result
    png = plot_curve(first_result, args.out / "docs" / f"{args.name}.png")
    data = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": "python3 scripts/learning.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "generation": lm.generation.to_json(), "wall_s": time.time() - t0, "runs": runs, "spread": spread(runs),
        "png": png.name, "environment": environment(device),
    }
    data = json.loads(json.dumps(data, default=float))  # the report's own form (int keys become strings)
    md = render_markdown(data)
    (args.out / "reports").mkdir(parents=True, exist_ok=True)
    (args.out / "reports" / f"{args.name}.json").write_text(json.dumps(data, indent=1))
    (args.out / "reports" / f"{args.name}.md").write_text(md)
    console.print(f"wrote {args.out / 'reports' / args.name}.json, .md and {png}")
    return data


if __name__ == "__main__":
    main()
