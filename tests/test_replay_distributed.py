"""Scale-out stays replayable (issue 26 item 5): checkpoints trained under torchrun with 2 CPU
processes (gloo, DDP; trainer/distributed.py) replay on one process within REPLAY_REL_TOL, their
records say world_size 2, and a step whose rows are fewer than the processes is recorded as no
step, which the replay agrees with (and would refuse under world_size 1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replay_env import make_journal, published, replay_store
from trainer_env import parity_registered
from verification.constants import REPLAY_REL_TOL

SCRIPT = str(Path(__file__).resolve().parent / "torchrun_publish.py")
pytestmark = [pytest.mark.slow, pytest.mark.replay]  # a local network, then trainers and replays: minutes on 2 cores (README: the replay test command)
PUBLISH_EVERY = 2


def _one_row_window(journal, window: int) -> None:
    """Rewrite `window` as a validator that accepted one row of it: its report lists one miner with
    one rollout "ok" (a row with a non-zero advantage), under the verified_root of that row alone,
    and the ledger entry is that report's."""
    from verification.bundle import decode_bundle, row_digest
    from verification.canonical import canonical_json
    from verification.merkle import merkle_root
    from verification.prf import prf

    wdir = journal.validator_dir / "windows" / str(window)
    report = json.loads((wdir / "report.json").read_text())
    keep, g, r = next((m, g, r) for m in report["miners"] if m["verdict"] == "ok"
                      for g in decode_bundle((wdir / "bundles" / f"{m['uid']}.rpb").read_bytes()).groups
                      for r in g.rollouts if r.advantage != 0)
    for m in report["miners"]:
        if m is not keep:
            m.update(verdict="rejected", reason="rejected", weight=0)
    for ro in keep["rollouts"]:
        if (ro["group"], ro["rollout"]) != (g.index, r.index):
            ro["reason"] = "rejected"
    leaf = prf("verified", keep["uid"], row_digest(g.index, g.environment, g.prompt, r))
    report["verified_root"] = merkle_root([leaf]).hex()
    data = canonical_json(report)
    (wdir / "report.json").write_bytes(data)
    key = (journal.validator[0], window)
    journal.ledger.entries[key] = dataclasses.replace(journal.ledger.entries[key], verified_root=merkle_root([leaf]),
                                                      report_hash=hashlib.sha256(data).digest())


@pytest.fixture(autouse=True)
def parity():
    with parity_registered():  # the checkpoints' generation params name the test environment
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One journal of 5 windows, its first window cut to one row; the trainer run on it in one
    process and under torchrun with 2, each publishing every PUBLISH_EVERY applied steps."""
    from verification.model import load_model

    root = tmp_path_factory.mktemp("scaleout")
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        journal = make_journal(lm, root / "net", windows=5)
    windows = sorted(int(p.name) for p in (journal.validator_dir / "windows").iterdir())
    _one_row_window(journal, windows[0])
    out = {}
    for name, world in (("one", 1), ("two", 2)):
        proc, lines = _train(journal, root / name, world)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = (root / name / "store", lines)
    yield lm, journal, windows, out, root
    shutil.rmtree(root, ignore_errors=True)


def _train(journal, state_dir: Path, world: int, *extra: str):
    """Run tests/torchrun_publish.py on `world` processes; (the process, rank 0's JSON lines)."""
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
                                   if world > 1 else [])
    args = [str(journal.validator_dir), str(state_dir), str(journal.validator[0]), journal.validator[1],
            str(PUBLISH_EVERY), *extra]
    proc = subprocess.run(launcher + [SCRIPT] + args, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc, [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


def test_torchrun_checkpoints_replay_on_one_process(runs, capsys):
    from verification.training_record import TRAINING_FILE, parse_training_record

    lm, journal, windows, out, _root = runs
    errors = {}
    for name, world in (("one", 1), ("two", 2)):
        store, lines = out[name]
        assert {x["world"] for x in lines} == {world}
        announced = [x["publication"]["fingerprint"] for x in lines
                     if x["publication"] and x["publication"]["stage"] == "announced"]
        assert len(announced) == 2, lines  # 8 or 9 applied steps: v1 and v2, the second on v1
        for ann, _ in published(store):
            ckpt = Path(ann.location.removeprefix("file://")).parent
            assert parse_training_record((ckpt / TRAINING_FILE).read_bytes()).world_size == world
        reports = replay_store(lm, store, journal.ledger)
        assert sorted(reports) == sorted(announced)
        for fp in announced:
            r = reports[fp]
            assert r.adapter_error <= REPLAY_REL_TOL and r.optimizer_error <= REPLAY_REL_TOL, r.lines
            assert r.steps == PUBLISH_EVERY
            errors[(name, r.version)] = (r.adapter_error, r.optimizer_error)
    with capsys.disabled():
        print("\nreplay on 1 process, error relative to the update (adapter, optimizer moments):",
              ", ".join(f"{n} process{'es' if n == 'two' else ''} v{v}: {a:.3g}, {o:.3g}"
                        for (n, v), (a, o) in sorted(errors.items())))


def test_fewer_rows_than_processes_is_no_step_and_the_replay_agrees(runs):
    from adapters.checkpoints import fetch_checkpoint
    from adapters.fetch import Fetcher
    from trainer.replay import replay_checkpoint
    from verification.errors import ReplayMismatchError
    from verification.training_record import TRAINING_FILE, WindowEvent, parse_training_record

    lm, journal, windows, out, _root = runs
    cut = windows[0]
    # the one row: trained by one process, no step under two (it cannot be sharded over 2 ranks)
    one = next(x for x in out["one"][1] if x["window"] == cut)
    two = next(x for x in out["two"][1] if x["window"] == cut)
    assert (one["rows"], one["applied"]) == (1, True), one
    assert not two["applied"] and "cannot be sharded over 2 ranks" in two["note"], two
    store = out["two"][0]
    ann, hotkey = published(store)[0]  # v1 of the 2-process run: its record starts at the cut window
    fetcher = Fetcher(file_roots=[store])
    manifest, files = fetch_checkpoint(fetcher, ann, hotkey)
    record = parse_training_record(files[TRAINING_FILE])
    first = record.events[0]
    assert isinstance(first, WindowEvent) and (first.window, first.outcome, first.rows) == (cut, "no_step", ())
    ckpt = Path(ann.location.removeprefix("file://")).parent

    def replay(files):
        return replay_checkpoint(lm, manifest, files, data=lambda h: (ckpt / "data" / h).read_bytes(),
                                 ledger=journal.ledger.ledger_entry)

    report = replay(files)
    assert any(f"window {cut}: no step (1 trainable rows)" in line for line in report.lines), report.lines
    # the same record claiming one process: one row is a step there, so "no step" (and no rows
    # trained) does not replay
    one_process = dict(files)
    one_process[TRAINING_FILE] = dataclasses.replace(record, world_size=1).to_bytes()
    with pytest.raises(ReplayMismatchError, match=f"event 0: window {cut}: .*1 verified rows left out") as exc:
        replay(one_process)
    assert exc.value.step == 0


def test_torchrun_restart_after_a_built_candidate(runs):
    """Under torchrun, rank 0 dies right after v1 is journaled as built (before its span's state
    write and its announcement); torchrun is started again on the same journal: every rank resumes
    from what rank 0 reconciled (v1 expired, its span ended), training goes on, and v2, whose record
    holds v1 as expired, replays on one process."""
    from trainer.journal import TrainerJournal

    lm, journal, windows, out, root = runs
    state = root / "crash"
    proc, lines = _train(journal, state, 2, "die-after-built")
    assert proc.returncode != 0
    assert [p["stage"] for p in TrainerJournal(state / "t").publications()] == ["built"]
    # the cut window (no step under 2 processes) and one more were printed; the third completed
    # v1's span and died in its publication
    assert [x["window"] for x in lines] == windows[:2]
    proc, lines = _train(journal, state, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [x["window"] for x in lines] == windows[3:]  # no window trained twice or skipped
    assert [(p["version"], p["stage"]) for p in TrainerJournal(state / "t").publications()] == [
        (1, "expired"), (2, "announced")]
    reports = replay_store(lm, state / "store", journal.ledger,
                           [p["fingerprint"] for p in TrainerJournal(state / "t").publications()
                            if p["stage"] == "announced"])
    (report,) = reports.values()
    assert report.version == 2 and report.adapter_error <= REPLAY_REL_TOL, report.lines
    assert any("candidate v1 expired" in line for line in report.lines), report.lines
