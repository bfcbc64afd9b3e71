"""The trainer gate's decisions in finished runs, re-decided under the current rule: which candidates a
greedy gate with GREEDY_GATE_MIN_DROP = 1 (the margin alone) withheld that the current rule announces.

Reads every training record a run's trainer published (RUN/trainer/published/N.training.json): each
candidate event holds the gate's recorded inputs (sampled rewards per rollout, greedy results per
problem, parent and candidate), so both rules are applied to the same recorded figures with
trainer/heldout.py's own functions. Candidates withheld after a run's last announcement are in no
record and are listed from the trainer's journal (RUN/trainer/published/N.json) by their accuracies.
This is a decision analysis: a run under the current rule would have trained on from the
candidates it announces (a withhold returns the trainer to the announced weights), so what follows
an announcement that was a withhold is not measured here.

    python3 scripts/gate_decisions.py --margin 0.02 RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from report_lib import md_table

from trainer.heldout import gate_withholds, greedy_withholds
from trainer.service import TrainerConfig
from verification.constants import GREEDY_GATE_MIN_DROP
from verification.errors import TrainingRecordError
from verification.training_record import CandidateEvent, parse_training_record

ROOT = Path(__file__).resolve().parent.parent


def margin_only_withholds(parent: list[int], candidate: list[int], margin: float) -> bool:
    """The greedy rule before GREEDY_GATE_MIN_DROP: the margin alone (a drop of one problem withholds
    wherever one problem is more than the margin)."""
    return gate_withholds([1_000_000 * c for c in parent], [1_000_000 * c for c in candidate], 1, margin)


def candidate_events(run: Path) -> list[CandidateEvent]:
    events: dict[int, CandidateEvent] = {}
    for path in sorted((run / "trainer" / "published").glob("*.training.json")):
        try:
            record = parse_training_record(path.read_bytes())
        except (OSError, TrainingRecordError) as exc:
            raise SystemExit(f"error: {path}: {exc}") from None
        for event in record.events:
            if isinstance(event, CandidateEvent):
                events[event.version] = event
    return [events[v] for v in sorted(events)]


def decisions(run: Path, rollouts: int, margin: float) -> list[dict]:
    rows = []
    for e in candidate_events(run):
        sampled = gate_withholds(list(e.parent_rewards), list(e.candidate_rewards), rollouts, margin)
        parent, cand = list(e.parent_greedy), list(e.candidate_greedy)
        rows.append({"version": e.version, "recorded": e.stage, "sampled_withholds": sampled,
                     "parent_solved": sum(parent), "candidate_solved": sum(cand), "problems": len(parent),
                     "margin_only": sampled or bool(parent) and margin_only_withholds(parent, cand, margin),
                     "current": sampled or bool(parent) and greedy_withholds(parent, cand, margin),
                     "source": "record"})
    recorded = {r["version"] for r in rows}
    problems = rows[-1]["problems"] if rows else 0
    # the journal's <version>.json, not the records beside them (<version>.training.json)
    journal = [p for p in (run / "trainer" / "published").glob("*.json") if p.stem.isdigit()]
    for path in sorted(journal, key=lambda p: int(p.stem)):
        pub = json.loads(path.read_text())
        if pub["version"] in recorded or pub["stage"] != "withheld" or not problems:
            continue
        p, c = round(pub["parent_greedy"] * problems), round(pub["greedy"] * problems)
        sampled = pub["heldout"] < pub["parent_heldout"] - margin
        parent, cand = [1] * p + [0] * (problems - p), [1] * c + [0] * (problems - c)
        rows.append({"version": pub["version"], "recorded": "withheld", "sampled_withholds": sampled,
                     "parent_solved": p, "candidate_solved": c, "problems": problems,
                     "margin_only": sampled or margin_only_withholds(parent, cand, margin),
                     "current": sampled or greedy_withholds(parent, cand, margin), "source": "journal"})
    return sorted(rows, key=lambda r: r["version"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="run directories (a scripts/learning.py WORKDIR/run-N)")
    ap.add_argument("--margin", type=float, default=TrainerConfig.gate_margin)
    ap.add_argument("--rollouts", type=int, default=TrainerConfig.heldout_rollouts)
    ap.add_argument("--name", default="gate_decisions")
    ap.add_argument("--out", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    for run in args.runs:
        if not (run / "trainer" / "published").is_dir():
            print(f"error: {run} holds no trainer/published directory", file=sys.stderr)
            raise SystemExit(2)
    data = {"command": "python3 scripts/gate_decisions.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "margin": args.margin, "min_drop": GREEDY_GATE_MIN_DROP,
            "runs": {str(run): decisions(run, args.rollouts, args.margin) for run in args.runs}}
    md = (f"# The gate's decisions re-decided (greedy gate: margin alone vs. at least {GREEDY_GATE_MIN_DROP} "
          f"problems)\n\n`{data['command']}`\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n")
    for run, rows in data["runs"].items():
        changed = [r["version"] for r in rows if r["margin_only"] != r["current"]]
        old = sum(r["margin_only"] == (r["recorded"] == "withheld") for r in rows)
        new = sum(r["current"] == (r["recorded"] == "withheld") for r in rows)
        md += (f"## {Path(run).name}\n\nRecorded stages reproduced (the rule a run was made under reproduces all "
               f"of them): by the margin-only rule {old} of {len(rows)}, by the current rule {new} of {len(rows)}. "
               f"{len(rows)} candidates; withheld by the margin-only rule: "
               f"{sum(r['margin_only'] for r in rows)}, by the current rule: {sum(r['current'] for r in rows)}; "
               f"decided otherwise: {', '.join(f'v{v}' for v in changed) or 'none'}.\n\n")
        md += md_table(["version", "recorded stage", "sampled gate", "parent solved", "candidate solved",
                        "margin only", "current rule", "from"],
                       [[f"v{r['version']}", r["recorded"], "withhold" if r["sampled_withholds"] else "pass",
                         f"{r['parent_solved']}/{r['problems']}", f"{r['candidate_solved']}/{r['problems']}",
                         "withhold" if r["margin_only"] else "announce", "withhold" if r["current"] else "announce",
                         r["source"]] for r in rows]) + "\n"
    (args.out / "reports").mkdir(parents=True, exist_ok=True)
    (args.out / "reports" / f"{args.name}.json").write_text(json.dumps(data, indent=1))
    (args.out / "reports" / f"{args.name}.md").write_text(md)
    print(md)
    return data


if __name__ == "__main__":
    main()
