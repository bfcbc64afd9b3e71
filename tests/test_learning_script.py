"""scripts/learning.py and trainer/evaluation.py: tasks from specs, the distinct-problem filter, the
not-a-measure rule, the verdict, the time budget, the report; and (replay marker) the whole script
on the tiny model, two runs of three windows."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from trainer.evaluation import (NOT_A_MEASURE_SHARE, Comparison, TaskEvaluation, distinct_problems, is_measure,
                                task_label, task_params, verdict)
from trainer.heldout import GreedyResult, evaluation_seeds
from verification import environments
from verification.errors import EnvironmentSpecError
from verification.generation import GenerationParams

from script_loader import load_script

ROOT = Path(__file__).resolve().parent.parent


def _script():
    return load_script("learning")


def test_task_specs(tiny):
    base = tiny.generation
    p = task_params("add:min_digits=2,max_digits=2", base)
    assert p.environments[0].params_dict == {**environments.get("add").DEFAULT_PARAMS, "min_digits": 2, "max_digits": 2}
    assert (p.temperature_milli, p.group_size, p.max_new_tokens) == (base.temperature_milli, base.group_size,
                                                                     base.max_new_tokens)
    assert task_params("add", base).environments[0].params_dict == environments.get("add").DEFAULT_PARAMS
    assert task_params(json.dumps(p.to_json()), base) == p
    assert task_label(p) == "add(format_credit_milli=0,max_digits=2,max_terms=2,min_digits=2,min_terms=2)"
    for bad in ("nosuchenv", "add:digits=2", "add:max_digits=x", "add:max_digits=99", "add:min_digits=3,max_digits=2",
                "{not json", '{"temperature_milli": 700}'):
        with pytest.raises(EnvironmentSpecError):
            task_params(bad, base)


def test_distinct_problem_filter_and_not_a_measure(tiny):
    small = task_params("add", tiny.generation)  # two one-digit terms: 81 problems
    draws = distinct_problems(tiny, small, evaluation_seeds(1, 128, task_label(small)), set())
    assert draws.drawn == 128 and draws.dropped_trained == 0
    assert draws.dropped_repeat >= 128 - 81 and len(draws.seeds) <= 81
    assert not draws.measure
    prompts = [tuple(tiny.chat_prompt_ids(environments.problem_for(s, small)[1].prompt)) for s in draws.seeds]
    assert len(set(prompts)) == len(prompts)  # what is kept is distinct

    big = task_params("add:min_digits=3,max_digits=3", tiny.generation)
    seeds = evaluation_seeds(1, 64, task_label(big))
    clean = distinct_problems(tiny, big, seeds, set())
    assert clean.dropped == 0 and clean.measure and clean.seeds == seeds
    trained = {tuple(tiny.chat_prompt_ids(environments.problem_for(s, big)[1].prompt)) for s in seeds[:5]}
    seen = distinct_problems(tiny, big, seeds, trained)
    assert (seen.dropped_trained, seen.dropped_repeat, seen.seeds) == (5, 0, seeds[5:])
    assert seen.measure  # 5 of 64 is under 10%
    trained |= {tuple(tiny.chat_prompt_ids(environments.problem_for(s, big)[1].prompt)) for s in seeds[5:8]}
    assert not distinct_problems(tiny, big, seeds, trained).measure  # 8 of 64 is over 10%


def test_is_measure_boundary():
    assert NOT_A_MEASURE_SHARE == 0.10
    assert is_measure(100, 10) and not is_measure(100, 11)
    assert not is_measure(0, 0) and not is_measure(5, 5)


def _task(before: list[bool], after: list[bool], *, drawn=None, dropped=0) -> TaskEvaluation:
    b, a = GreedyResult("base", before, 0.01), GreedyResult("final", after, 0.01)
    drawn = drawn if drawn is not None else len(before) + dropped
    return TaskEvaluation("target", "add(max_digits=2)", {}, drawn, dropped, 0, is_measure(drawn, dropped),
                          chance=0.01, greedy=Comparison.of(a, b), greedy_per_checkpoint={0: b.accuracy, 3: a.accuracy})


def test_verdict():
    n = 100
    before = [i < 34 for i in range(n)]
    risen = _task(before, [i < 60 for i in range(n)])  # +26 points, every change a gain
    met, line = verdict(risen)
    assert met is True and "rose by +26.0 points" in line and line.endswith(": met")
    assert risen.greedy.low > 0
    small = _task(before, [i < 44 for i in range(n)])  # +10 points: interval excludes zero, under 15
    met, line = verdict(small)
    assert met is False and small.greedy.low > 0 and line.endswith("not met")
    noisy = _task(before, [(i < 34) != (i % 3 == 0) for i in range(n)])  # churn: gains and losses
    assert verdict(noisy)[0] is False
    unmeasured = _task(before, [i < 90 for i in range(n)], drawn=128, dropped=28)
    met, line = verdict(unmeasured)
    assert met is None and "not a measure" in line and "no verdict" in line


def test_time_budget():
    script = _script()
    assert script.fits_budget(0.0, [], 60.0)
    assert script.fits_budget(40.0, [10.0, 20.0], 60.0)
    assert not script.fits_budget(41.0, [10.0, 20.0], 60.0)  # the slowest window so far decides
    assert script.run_drand_seed(0) is None
    assert len({script.run_drand_seed(r) for r in range(4)}) == 4


def test_report_rendering():
    script = _script()
    task = _task([i < 34 for i in range(100)], [i < 60 for i in range(100)])
    transfer = _task([False] * 100, [False] * 100, drawn=128, dropped=28)
    transfer.role = "transfer"
    met, line = verdict(task)
    run = {"run": 0, "drand_seed": None, "loop_s": 600.0, "eval_s": 60.0, "windows_asked": 18, "windows_run": 12,
           "stopped_by_budget": True, "ok": True, "problems": [], "trained": {"trained_prompts": 40, "windows_read": 12,
                                                                          "unreadable": []},
           "per_window": [{"window": 2, "rows": 64, "groups": 8, "signal_rate": 0.75, "mean_reward": 0.5,
                           "applied": True, "grad_norm": 1.0, "checkpoint": 0}],
           "checkpoints": [{"version": 3, "from_window": 9, "heldout": 0.5, "parent_heldout": 0.45, "difference": 0.05,
                            "half_width": 0.03, "bytes": 1000, "stage": "announced", "greedy": 0.6,
                            "parent_greedy": None}],
           "evaluation": [{**asdict(e), "n": e.n} for e in (task, transfer)], "target_met": met, "verdict": line,
           "target_gain": task.greedy.difference}
    data = json.loads(json.dumps({"args": {"model": "tiny", "windows": 18, "time_budget_min": 60.0, "groups": 4,
                                           "eval_problems": 128, "eval_rollouts": 4},
                                  "command": "python3 scripts/learning.py", "runs": [run, {**run, "run": 1}],
                                  "spread": script.spread([run, {**run, "run": 1, "target_gain": 0.1,
                                                                 "target_met": False}]), "png": "learning.png"}))
    md = script.render_markdown(data)
    assert line in md and "met in 1 of 2" in md and "mean +18.0 points, min +10.0, max +26.0" in md
    assert "stopped by the time budget" in md and "**not a measure**" in md
    assert "28 trained, 0 repeats of 128" in md
    assert "| 3 | 9 | 0.500 | 0.450 | +0.050 ± 0.030 | 0.600 | - | 1000 | announced |" in md
    assert "Greedy accuracy on the target per checkpoint: v0 0.340, v3 0.600" in md
    assert script.spread([{"target_gain": None, "target_met": None}]) is None


def test_run_facts_round_trip_and_a_missing_file_is_an_error(tmp_path):
    script = _script()
    script.write_run_facts(tmp_path, 3, 1234.5, 60, True)
    assert script.read_run_facts(tmp_path) == {"run": 3, "loop_s": 1234.5, "windows_asked": 60,
                                               "stopped_by_budget": True}
    with pytest.raises(SystemExit, match="is missing"):
        script.read_run_facts(tmp_path / "elsewhere")
    (tmp_path / script.RUN_FACTS).write_text(json.dumps({"run": 3}))
    with pytest.raises(SystemExit, match="lacks"):
        script.read_run_facts(tmp_path)


def _run_record(run: int, gain: float, met: bool) -> dict:
    return {"run": run, "drand_seed": None if run == 0 else f"rollproof-learning-run-{run}", "loop_s": 60.0,
            "eval_s": 6.0, "windows_asked": 4, "windows_run": 4, "stopped_by_budget": False, "ok": True,
            "problems": [], "trained": {"trained_prompts": 4, "windows_read": 4, "unreadable": []},
            "per_window": [], "checkpoints": [], "evaluation": [
                {"role": "target", "label": "add(x)", "measure": True, "n": 100, "drawn": 100, "dropped_trained": 0,
                 "dropped_repeat": 0, "chance": 0.01, "greedy": {"base": 0.2, "final": 0.2 + gain,
                                                                  "difference": gain, "low": gain - 0.05,
                                                                  "high": gain + 0.05},
                 "sampled": None, "greedy_per_checkpoint": {"0": 0.2}}],
            "target_met": met, "verdict": f"run {run} verdict", "target_gain": gain}


def test_combine_reports_puts_runs_of_separate_invocations_side_by_side(tmp_path):
    script = _script()
    args = {"model": "tiny", "windows": 4, "time_budget_min": 60.0, "groups": 4, "eval_problems": 100,
            "eval_rollouts": 0}
    first = tmp_path / "a.json"
    first.write_text(json.dumps({"args": args, "command": "python3 scripts/learning.py A", "png": "a.png",
                                 "runs": [_run_record(0, 0.30, True)]}))
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"args": args, "command": "python3 scripts/learning.py B --first-run 1",
                                  "png": "b.png", "runs": [_run_record(2, 0.10, False), _run_record(1, 0.20, True)]}))
    data = script.main(["--combine", str(second), str(first), "--out", str(tmp_path / "out"), "--name", "both"])
    assert [r["run"] for r in data["runs"]] == [0, 1, 2]
    assert data["spread"]["runs"] == 3 and data["spread"]["met"] == 2
    assert data["spread"]["min"] == pytest.approx(0.10) and data["spread"]["max"] == pytest.approx(0.30)
    assert data["spread"]["mean"] == pytest.approx(0.20)
    md = (tmp_path / "out" / "reports" / "both.md").read_text()
    assert "met in 2 of 3" in md and "python3 scripts/learning.py A" in md and "--first-run 1" in md
    assert all(f"run {r} verdict" in md for r in range(3))
    assert json.loads((tmp_path / "out" / "reports" / "both.json").read_text()) == data
    with pytest.raises(SystemExit, match="repeat"):  # the same run twice is not two runs
        script.main(["--combine", str(first), str(first), "--out", str(tmp_path / "out"), "--name", "twice"])
    with pytest.raises(SystemExit, match="nope.json"):
        script.main(["--combine", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")])


@pytest.mark.replay
def test_script_end_to_end_two_runs(tmp_path):
    """The whole script on the tiny model: two runs of three windows with a test environment in which
    it has reward variance (tests/trainer_env.py), a target and a transfer task of that environment."""
    from verification.bundle import decode_bundle

    sys.path.insert(0, str(ROOT / "tests"))
    from trainer_env import PARITY_PARAMS, parity_registered

    script = _script()
    with parity_registered():
        data = script.main(["--model", "tiny", "--train-task", json.dumps(PARITY_PARAMS), "--windows", "3",
                            "--runs", "2", "--groups", "3", "--publish-every", "1", "--gate-margin", "1.0",
                            "--gate-problems", "6", "--target", "test-parity:digits=5", "--transfer",
                            "test-parity:digits=1", "--eval-problems", "24", "--eval-rollouts", "2",
                            "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "out"), "--name", "e2e"])
        params = GenerationParams.from_json(PARITY_PARAMS)
        assert json.loads((tmp_path / "out" / "reports" / "e2e.json").read_text()) == data
        md = (tmp_path / "out" / "reports" / "e2e.md").read_text()
        assert (tmp_path / "out" / "docs" / "e2e.png").stat().st_size > 0
        assert [r["drand_seed"] for r in data["runs"]] == [None, "rollproof-learning-run-1"]
        for r in data["runs"]:
            assert r["ok"], r["problems"]
            assert r["windows_run"] == 3 and not r["stopped_by_budget"]
            roles = {e["role"]: e for e in r["evaluation"]}
            assert set(roles) == {"training mix", "target", "transfer"}
            assert not roles["transfer"]["measure"] and roles["transfer"]["dropped_repeat"] > 0  # 9 problems
            target = roles["target"]
            assert target["measure"] and r["verdict"] in md
            announced = [c["version"] for c in r["checkpoints"] if c["stage"] == "announced"]
            assert announced, r["checkpoints"]
            assert sorted(int(v) for v in target["greedy_per_checkpoint"]) == [0] + announced
            g = target["greedy"]
            assert g["base"] == target["greedy_per_checkpoint"]["0"]
            assert g["final"] == target["greedy_per_checkpoint"][str(announced[-1])]
            assert r["target_gain"] == pytest.approx(g["final"] - g["base"])
            assert target["sampled"] is not None and target["sampled"]["n"] == target["n"]
            # the trained-on count, recounted from the bundles the validator kept (every row of these
            # honest runs was accepted)
            root = tmp_path / "wd" / f"run-{r['run']}"
            bundle_prompts = set()
            for path in (root / "validator" / "windows").glob("*/bundles/*.rpb"):
                bundle_prompts |= {tuple(int(t) for t in g.prompt) for g in decode_bundle(path.read_bytes()).groups}
            assert r["trained"]["trained_prompts"] == len(bundle_prompts) > 0
            mix = roles["training mix"]
            assert mix["params"]["environments"] == params.to_json()["environments"]
            from trainer.evaluation import task_label as label
            from verification.model import load_model

            lm = load_model("tiny")
            trained_draws = sum(1 for s in evaluation_seeds(1, 24, label(params))
                                if tuple(lm.chat_prompt_ids(environments.problem_for(s, params)[1].prompt))
                                in bundle_prompts)
            assert mix["dropped_trained"] == trained_draws
        assert data["spread"]["runs"] == 2
        gains = [r["target_gain"] for r in data["runs"]]
        assert data["spread"]["min"] == min(gains) and data["spread"]["max"] == max(gains)
        # a finished run evaluated again from its directory: the loop's facts as they were, the same
        # greedy figures (greedy decoding has no noise)
        again = script.main(["--model", "tiny", "--train-task", json.dumps(PARITY_PARAMS), "--from-workdir",
                             str(tmp_path / "wd" / "run-1"), "--groups", "3", "--target", "test-parity:digits=5",
                             "--transfer",
                             "test-parity:digits=1", "--eval-problems", "24", "--eval-rollouts", "2",
                             "--out", str(tmp_path / "out"), "--name", "again"])
        [rerun], [before] = again["runs"], [r for r in data["runs"] if r["run"] == 1]
        for key in ("run", "drand_seed", "loop_s", "windows_asked", "windows_run", "stopped_by_budget",
                    "target_gain", "checkpoints", "per_window"):
            assert rerun[key] == before[key], key


def test_bad_task_is_one_error_line_before_any_window(tmp_path, capsys):
    script = _script()
    for flag, spec in (("--target", "add:max_digits=99"), ("--transfer", "nosuchenv"), ("--train-task", "add:x=1")):
        with pytest.raises(SystemExit) as stopped:
            script.main(["--model", "tiny", flag, spec, "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path)])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {spec}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "wd").exists() and not (tmp_path / "reports").exists()


def test_localnet_keep_going_stops_before_a_window(tiny, tmp_path):
    from rollproof.localnet import run_localnet

    asked = []
    result = run_localnet(tiny, tmp_path, windows=3, n_groups=1, cheaters=False, train=False,
                          keep_going=lambda window: asked.append(window) or False)
    assert result.ok, result.problems
    assert len(result.windows) == 1 and asked == [result.windows[0].window + 1]
