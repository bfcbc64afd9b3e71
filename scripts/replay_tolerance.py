"""The proof of learning's tolerance, measured (issue 26 item 3) and the cost of one replay (item 4).

Runs a short local network through the real path (miners -> validator -> trainer, no cheaters) so
that the trainer announces checkpoints with training records, then for every announced checkpoint:

  * replays it through the real path (trainer/replay.replay_checkpoint, the nodes' code);
  * honest differences: re-runs the record's steps from the recorded start state on the recorded
    rows under another torch thread count, another micro-batch size (another float summation
    order), torch's deterministic mode on, and (tiny only) a 2-process torchrun step
    (trainer/distributed_check) against a 1-process one; adapter and optimizer errors as the
    replay measures them (trainer/replay.adapter_error / optimizer_error); the held-out gate's
    rollouts that differ from the record under each thread count;
  * dishonest differences: from the same start state and rows, the adapter a dishonest trainer
    would announce (one fabricated row added, one row removed, one row swapped for a verified row
    of another window, one step skipped, learning rate x0.9 / x1.1 / x2, another LoRA init seed)
    and the replay's adapter error against it, plus the rule that catches the cheat before the
    tolerance does; for the gate skipped, the held-out rollouts a trainer would have to misreport
    to turn the gate's decision, against GATE_REPLAY_FLIPS;
  * cost: the real replay's wall time, and its parts (step(s), parent and candidate held-out
    evaluation, loading the announced model), and one step alone.

    python scripts/replay_tolerance.py --model tiny      # about 3-4 minutes on 2 cores
    python scripts/replay_tolerance.py --model smollm2   # about 30-40 minutes on 2 cores

Writes reports/replay_tolerance_<model>.{md,json}. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # trainer_env: the tiny model's parity environment
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_lib import environment, md_table, write  # noqa: E402

from adapters.chain.base import LedgerEntry  # noqa: E402
from verification.constants import GATE_REPLAY_FLIPS, REPLAY_REL_TOL  # noqa: E402
from verification.environments.base import REWARD_SCALE  # noqa: E402

HONEST_MICRO_BATCHES = (1, 3, 64)
LR_FACTORS = (0.9, 1.1, 2.0)


# ---- pure helpers (tests/test_replay_tolerance_script.py) ----------------------------------------

def ledger_from_events(events: list[dict]) -> Callable[[int, int], LedgerEntry | None]:
    """ledger(validator uid, window) over the chain's ScoresRecorded events (EVMChain.ledger_events)."""
    entries = {}
    for e in events:
        entries[(int(e["validator_uid"]), int(e["window"]))] = LedgerEntry(
            int(e["validator_uid"]), int(e["window"]), tuple(map(int, e["uids"])), tuple(map(int, e["scores"])),
            bytes(e["verified_root"]), bytes(e["report_hash"]), int(e["block"]))
    return lambda uid, window: entries.get((uid, window))


def flips_to_pass(parent: list[int], candidate: list[int], rollouts: int, margin: float) -> int | None:
    """The fewest rollouts per model (k in the parent's record and k in the candidate's) a trainer
    must misreport for a candidate the gate withholds to pass it: each misreported candidate rollout
    raised to full reward, each parent rollout lowered to 0, the largest gains first. 0 when the
    gate passes it already; None when no k does."""
    from trainer.heldout import gate_withholds

    if not gate_withholds(parent, candidate, rollouts, margin):
        return 0
    up = sorted(range(len(candidate)), key=lambda i: candidate[i])  # lowest candidate rewards first
    down = sorted(range(len(parent)), key=lambda i: -parent[i])  # highest parent rewards first
    for k in range(1, max(len(parent), len(candidate)) + 1):
        c, p = list(candidate), list(parent)
        for i in up[:k]:
            c[i] = REWARD_SCALE
        for i in down[:k]:
            p[i] = 0
        if not gate_withholds(p, c, rollouts, margin):
            return k
    return None


def gate_shift(flips: int, n_rollouts: int) -> float:
    """The most a trainer can move the gate's paired difference (reward units) by misreporting
    `flips` rollouts of each model: 2 * flips full rewards over n_rollouts."""
    return 2.0 * flips / n_rollouts


def summary(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max); nan for none."""
    if not values:
        return (math.nan, math.nan, math.nan)
    return (min(values), statistics.median(values), max(values))


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.3g}"


def recommend(honest_max: float, dishonest_min: float, current: float = REPLAY_REL_TOL) -> dict:
    """Where a tolerance sits between the largest honest and the smallest dishonest error: the
    geometric middle of the gap (keeping a decade of margin each side when the gap allows it),
    and whether the current value is inside the gap."""
    floor = max(honest_max, 1e-12)
    ratio = dishonest_min / floor if honest_max > 0 else math.inf
    if dishonest_min <= honest_max:
        return {"ratio": ratio, "separates": False, "recommended": None, "current_ok": False}
    middle = math.sqrt(floor * dishonest_min) if math.isfinite(dishonest_min) else floor * 1e3
    return {"ratio": ratio, "separates": True, "recommended": middle,
            "current_ok": honest_max < current < dishonest_min,
            "current_margin_low": current / floor, "current_margin_high": dishonest_min / current}


# ---- the material: a local network's checkpoints -------------------------------------------------

@dataclasses.dataclass
class Checkpoint:
    manifest_bytes: bytes
    manifest: object
    files: dict[str, bytes]
    directory: Path

    def data(self, h: str) -> bytes:
        return (self.directory / "data" / h).read_bytes()


def load_store_checkpoints(store_root: Path, netuid: int, fingerprints: list[str]) -> list[Checkpoint]:
    from verification.checkpoint import parse_manifest

    out = []
    for fp in fingerprints:
        d = store_root / "rollproof" / str(netuid) / "checkpoints" / fp
        mb = (d / "manifest.json").read_bytes()
        m = parse_manifest(mb)
        out.append(Checkpoint(mb, m, {f.name: (d / f.name).read_bytes() for f in m.files}, d))
    return sorted(out, key=lambda c: c.manifest.version)


def make_material(model: str, workdir: Path, windows: int, n_groups: int, heldout_problems: int | None,
                  publish_every: int, say, reuse: bool = False) -> tuple[object, list[Checkpoint], Callable, dict]:
    from rollproof.localnet import NETUID, run_localnet
    from trainer.service import TrainerConfig
    from verification.model import load_model

    config = TrainerConfig(publish_every=publish_every)
    if heldout_problems:
        config.heldout_problems = heldout_problems
    lm = load_model(model)
    if model == "tiny":  # random weights: the parity environment gives reward variance, the gate passes all
        from trainer_env import parity_registered

        stack = parity_registered()
        lm = lm.with_generation(stack.__enter__())
        config.heldout_problems = heldout_problems or 6
        config.gate_margin = 1.0
    saved = workdir / "material.pkl"
    if reuse and saved.is_file():  # a previous run's network (its chain's ledger events kept beside it)
        announced, events, info = pickle.loads(saved.read_bytes())
        base = lm.with_generation(lm.generation.with_groups(n_groups)) if n_groups != lm.generation.groups else lm
        return base, load_store_checkpoints(workdir / "store", NETUID, announced), ledger_from_events(events), info
    t = time.monotonic()
    result = run_localnet(lm, workdir, windows=windows, n_groups=n_groups, cheaters=False, trainer_config=config,
                          on_event=lambda m: say("  " + m) if m.startswith(("window", "held-out")) else None)
    seconds = time.monotonic() - t
    announced = [p.fingerprint for p in result.publications if p.stage == "announced"]
    say(f"localnet: {windows} windows in {seconds:.0f} s, {len(result.publications)} candidates, "
        f"{len(announced)} announced; node verdicts: {sorted(result.replays.values())}")
    base = lm.with_generation(lm.generation.with_groups(n_groups)) if n_groups != lm.generation.groups else lm
    checkpoints = load_store_checkpoints(workdir / "store", NETUID, announced)
    info = {"windows": windows, "n_groups": n_groups, "localnet_s": seconds, "publish_every": publish_every,
            "heldout_problems": config.heldout_problems, "heldout_rollouts": config.heldout_rollouts,
            "gate_margin": config.gate_margin, "candidates": [(p.version, p.stage) for p in result.publications],
            "node_verdicts": dict(result.replays), "problems": list(result.problems)}
    saved.write_bytes(pickle.dumps((announced, result.ledger, info)))
    return base, checkpoints, ledger_from_events(result.ledger), info


# ---- re-running a record's steps under chosen conditions -----------------------------------------

@dataclasses.dataclass
class Material:
    """One checkpoint's replay inputs: settings, start state, and each window event's batch."""

    record: object
    settings: object
    start_adapter: dict[str, torch.Tensor]
    start_config: dict
    start_optimizer: dict[str, torch.Tensor] | None
    events: list  # ("step", window, [TrainingRow]) | ("reset",) in record order
    announced_adapter: dict[str, torch.Tensor]
    announced_optimizer: dict[str, torch.Tensor]
    ledger: Callable


def material_of(ck: Checkpoint, parent: Checkpoint | None, ledger) -> Material:
    from trainer.adapter_files import adapter_from_bytes
    from trainer.optimizer_files import optimizer_from_bytes
    from trainer.record import settings_from_json
    from trainer.rows import accepted_rows, drop_stale
    from trainer.step import TrainingRow
    from verification.checkpoint_model import ADAPTER_FILE
    from verification.training_record import (OPTIMIZER_FILE, START_FILE, TRAINING_FILE, ReturnToAnchor,
                                              WindowEvent, parse_training_record)

    record = parse_training_record(ck.files[TRAINING_FILE])
    settings = settings_from_json(record.settings)
    if parent is None:
        start, start_config = adapter_from_bytes(ck.files[START_FILE])
        start_opt = None
    else:
        start, start_config = adapter_from_bytes(parent.files[ADAPTER_FILE])
        start_opt = optimizer_from_bytes(parent.files[OPTIMIZER_FILE])
    versions = dict(record.lineage)
    events = []
    for e in record.events:
        if isinstance(e, ReturnToAnchor):
            events.append(("reset",))
        elif isinstance(e, WindowEvent) and e.outcome in ("applied", "skipped"):
            entry = ledger(record.validator_uid, e.window)
            bundles = {uid: ck.data(h) for uid, h in e.bundles.items()}
            rows = accepted_rows(ck.data(e.report_sha256), bundles.get, entry.report_hash)
            fresh, _ = drop_stale(rows.rows, versions, record.parent_version, settings.max_staleness)
            trainable = [r for r in fresh if r.advantage != 0.0]
            assert tuple(r.leaf.hex() for r in trainable) == e.rows, "the record's rows are the verified rows"
            events.append(("step", e.window, [TrainingRow(r.prompt, r.completion, r.logprobs, r.advantage)
                                              for r in trainable]))
    announced, _ = adapter_from_bytes(ck.files[ADAPTER_FILE])
    return Material(record, settings, start, start_config, start_opt, events, announced,
                    optimizer_from_bytes(ck.files[OPTIMIZER_FILE]), ledger)


@contextlib.contextmanager
def torch_mode(threads: int | None = None, deterministic: bool | None = None):
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic is not None:
            torch.use_deterministic_algorithms(deterministic)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def run_events(policy, mat: Material, *, train=None, events=None, start=None, start_optimizer="recorded"):
    """Load the start state into `policy`, run the events (steps under `train`, default the record's
    settings), return (adapter tensors, optimizer tensors, seconds of the steps, steps)."""
    from trainer.adapter_files import adapter_tensors, load_adapter_into
    from trainer.optimizer_files import load_optimizer_state, optimizer_tensors
    from trainer.step import make_optimizer, train_step

    train = train or mat.settings.train
    load_adapter_into(policy, start if start is not None else mat.start_adapter, mat.start_config)
    optimizer = make_optimizer(policy, train)
    opt_start = mat.start_optimizer if start_optimizer == "recorded" else start_optimizer
    if opt_start is not None:
        load_optimizer_state(policy, optimizer, opt_start)
    anchor = (adapter_tensors(policy), copy.deepcopy(optimizer.state_dict()))
    t, steps = time.monotonic(), 0
    for ev in (mat.events if events is None else events):
        if ev[0] == "reset":
            load_adapter_into(policy, anchor[0], mat.start_config)
            optimizer.load_state_dict(copy.deepcopy(anchor[1]))
        else:
            train_step(policy, optimizer, ev[2], train)
            steps += 1
    return adapter_tensors(policy), optimizer_tensors(policy, optimizer.state_dict()), time.monotonic() - t, steps


def first_step(events) -> int:
    return next(i for i, ev in enumerate(events) if ev[0] == "step")


def with_rows(events, index: int, rows) -> list:
    out = list(events)
    out[index] = ("step", out[index][1], rows)
    return out


def fabricated_row(rows):
    """A row no miner sent: a real row's prompt with its completion reversed (the behaviour
    logprobs reversed with it) and the largest advantage of the batch."""
    from trainer.step import TrainingRow

    r = rows[0]
    return TrainingRow(r.prompt, tuple(reversed(r.completion)), r.behaviour_logprobs[::-1].copy(),
                       max(abs(x.advantage) for x in rows))


def measure_checkpoint(base, ck: Checkpoint, parent: Checkpoint | None, mat: Material, other_rows, *, own_threads: int,
                       gate_threads: bool, heldout, say) -> dict:
    from trainer.checkpointing import merged_model
    from trainer.heldout import evaluate
    from trainer.policy import LoraSettings, make_policy
    from trainer.replay import ParentCheckpoint, adapter_error, optimizer_error, replay_checkpoint
    from verification.checkpoint_model import load_checkpoint
    from verification.errors import CheckpointInvalidError

    v = ck.manifest.version
    out = {"version": v, "fingerprint": ck.manifest.fingerprint, "honest": {}, "dishonest": {}, "caught_by": {},
           "gate": {}, "cost": {}}
    pck = ParentCheckpoint(parent.manifest_bytes, parent.manifest, parent.files) if parent else None

    # ---- the real path, cold (its own held-out evaluations), timed in its parts ----
    import trainer.replay as replay_module

    parts = {"evaluate": [], "train_step": [], "announced": []}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.monotonic()
            result = fn(*a, **kw)
            parts[name].append((time.monotonic() - t0, a[0], result))
            return result
        return wrapper

    originals = {name: getattr(replay_module, attr) for name, attr in
                 (("evaluate", "evaluate"), ("train_step", "train_step"), ("announced", "_announced"))}
    with torch_mode(own_threads):
        t = time.monotonic()
        try:
            replay_module.evaluate = timed("evaluate", originals["evaluate"])
            replay_module.train_step = timed("train_step", originals["train_step"])
            replay_module._announced = timed("announced", originals["announced"])
            rep = replay_checkpoint(base, ck.manifest, ck.files, data=ck.data, ledger=mat.ledger, parent=pck)
            out["real_replay"] = {"ok": True, "adapter_error": rep.adapter_error,
                                  "optimizer_error": rep.optimizer_error, "gate_flips": rep.gate_flips,
                                  "steps": rep.steps, "lines": rep.lines}
        except CheckpointInvalidError as exc:
            out["real_replay"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            replay_module.evaluate = originals["evaluate"]
            replay_module.train_step = originals["train_step"]
            replay_module._announced = originals["announced"]
        out["cost"]["full replay (replay_checkpoint)"] = time.monotonic() - t
    out["cost"]["its step(s)"] = sum(x[0] for x in parts["train_step"])
    out["cost"]["one step"] = statistics.median(x[0] for x in parts["train_step"]) if parts["train_step"] else 0.0
    out["cost"]["loading the announced model"] = sum(x[0] for x in parts["announced"])
    if len(parts["evaluate"]) == 2:  # the parent's, then the candidate's (HeldoutCache evaluates each once)
        out["cost"]["held-out evaluation, parent"] = parts["evaluate"][0][0]
        out["cost"]["held-out evaluation, candidate"] = parts["evaluate"][1][0]
        for _, lm, result in parts["evaluate"]:  # the same evaluations serve the gate table below
            heldout.keep(lm, own_threads, result.rollout_rewards)
    say(f"v{v}: real replay {out['real_replay'].get('ok')} in {out['cost']['full replay (replay_checkpoint)']:.1f} s "
        f"({out['real_replay'].get('adapter_error', out['real_replay'].get('error'))}); parts "
        + ", ".join(f"{k} {x:.1f} s" for k, x in out["cost"].items()))

    policy = make_policy(base, mat.settings.lora)
    n_steps = sum(1 for e in mat.events if e[0] == "step")
    out["steps"] = n_steps
    out["rows"] = [len(e[2]) for e in mat.events if e[0] == "step"]

    def errors(adapter, optim, ref_adapter=None, ref_optim=None):
        a = adapter_error(adapter, mat.announced_adapter if ref_adapter is None else ref_adapter, mat.start_adapter)
        o = optimizer_error(optim, mat.announced_optimizer if ref_optim is None else ref_optim)
        return a, o

    # ---- honest conditions ----
    with torch_mode(own_threads):
        ref_adapter, ref_optim, _, _ = run_events(policy, mat)
    out["honest"][f"threads {own_threads} (the trainer's)"] = errors(ref_adapter, ref_optim)
    for threads in sorted({1, 2} - {own_threads}):
        with torch_mode(threads):
            a, o, _, _ = run_events(policy, mat)
        out["honest"][f"threads {threads}"] = errors(a, o)
    for mb in HONEST_MICRO_BATCHES:
        if mb == mat.settings.train.micro_batch_size:
            continue
        with torch_mode(own_threads):
            a, o, _, _ = run_events(policy, mat, train=dataclasses.replace(mat.settings.train, micro_batch_size=mb))
        out["honest"][f"micro_batch_size {mb}"] = errors(a, o)
    with torch_mode(own_threads, deterministic=True):
        a, o, _, _ = run_events(policy, mat)
    out["honest"]["deterministic algorithms on"] = errors(a, o)
    with torch_mode(1, deterministic=True):
        a, o, _, _ = run_events(policy, mat, train=dataclasses.replace(mat.settings.train, micro_batch_size=1))
    out["honest"]["threads 1, micro_batch_size 1, deterministic"] = errors(a, o)
    say(f"v{v}: honest " + ", ".join(f"{k}: {fmt(x[0])}/{fmt(x[1])}" for k, x in out["honest"].items()))

    # ---- dishonest: what a cheating trainer would announce, against the honest replay ----
    def dishonest(name, caught_by, **kw):
        with torch_mode(own_threads):
            a, o, _, _ = run_events(policy, mat, **kw)
        out["dishonest"][name] = (adapter_error(ref_adapter, a, mat.start_adapter), optimizer_error(ref_optim, o))
        out["caught_by"][name] = caught_by

    i = first_step(mat.events)
    rows = mat.events[i][2]
    rows_rule = "rule 3: the record's rows must be the verified rows under the ledger's verified_root, in order"
    dishonest("one fabricated row added", rows_rule + " (its leaf is not under the root)",
              events=with_rows(mat.events, i, list(rows) + [fabricated_row(rows)]))
    if len(rows) > 1:
        dishonest("one row removed", rows_rule + " (a verified row left out)",
                  events=with_rows(mat.events, i, list(rows)[:-1]))
    if other_rows:
        dishonest("one row swapped for a verified row of another window", rows_rule + " (the leaf is not under "
                  "this window's root)", events=with_rows(mat.events, i, [other_rows[0]] + list(rows)[1:]))
    if n_steps > 1:
        dishonest("one step skipped (multi-step record)", "rule 3: the step is re-run and must have the recorded "
                  "outcome; rule 4: publish_every applied steps per candidate; else the tolerance",
                  events=[e for k, e in enumerate(mat.events) if k != i])
    out["dishonest"]["no step (the start state announced)"] = (
        adapter_error(ref_adapter, mat.start_adapter, mat.start_adapter), math.inf)
    out["caught_by"]["no step (the start state announced)"] = "the tolerance (the announced update is zero)"
    for f in LR_FACTORS:
        dishonest(f"learning rate x{f:g}", "the tolerance (settings are the record's: a false lr in the record "
                  "replays, a true one is caught only by the adapter)",
                  train=dataclasses.replace(mat.settings.train, lr=mat.settings.train.lr * f))
    if parent is None:
        from trainer.adapter_files import adapter_tensors

        other = make_policy(base, dataclasses.replace(mat.settings.lora, init_seed=mat.settings.lora.init_seed + 1))
        seed_start = adapter_tensors(other)
        del other
        dishonest("another LoRA init seed (start.safetensors kept)", "the tolerance (the stored start adapter binds "
                  "the init; an honestly stored other seed is no cheat: it replays)", start=seed_start)
    say(f"v{v}: dishonest " + ", ".join(f"{k}: {fmt(x[0])}" for k, x in out["dishonest"].items()))

    # ---- the gate: recorded rewards against the replayed ones, per thread count ----
    cand_event = mat.record.events[-1]
    s = mat.settings
    parent_model = base if parent is None else load_checkpoint(base, parent.manifest, parent.files)
    announced_model = load_checkpoint(base, ck.manifest, ck.files)
    for threads in ([own_threads] + sorted({1, 2} - {own_threads}) if gate_threads else [own_threads]):
        with torch_mode(threads):
            before = heldout(parent_model, cand_event.generation, mat.record.netuid, s, threads)
            after = heldout(announced_model, cand_event.generation, mat.record.netuid, s, threads)
        out["gate"][f"threads {threads}"] = {
            "parent_flips": sum(a != b for a, b in zip(before, cand_event.parent_rewards)),
            "candidate_flips": sum(a != b for a, b in zip(after, cand_event.candidate_rewards))}
    n = s.heldout_problems * s.heldout_rollouts
    from trainer.heldout import mean_of_rollouts

    out["gate"]["recorded_means"] = (mean_of_rollouts(list(cand_event.parent_rewards), s.heldout_rollouts),
                                     mean_of_rollouts(list(cand_event.candidate_rewards), s.heldout_rollouts))
    out["gate"]["n_rollouts"] = n
    out["gate"]["margin"] = s.gate_margin
    # the gate skipped: the candidate the gate would withhold if the margin were 0 (or the one it
    # withholds): how many rollouts per model must a trainer misreport to announce it?
    out["gate"]["flips_to_pass_at_margin_0"] = flips_to_pass(list(cand_event.parent_rewards),
                                                             list(cand_event.candidate_rewards), s.heldout_rollouts, 0.0)
    del policy
    return out


class HeldoutEvaluator:
    """Held-out rollout rewards by (model fingerprint, torch threads), evaluated once each."""

    def __init__(self):
        self.cache = {}

    def keep(self, lm, threads, rewards):
        self.cache[(lm.fingerprint.hex(), threads)] = list(rewards)

    def __call__(self, lm, params, netuid, s, threads):
        from trainer.heldout import evaluate

        model = lm if params == lm.generation else lm.with_generation(params)
        key = (model.fingerprint.hex(), threads)
        if key not in self.cache:
            self.cache[key] = evaluate(model, params, netuid, s.heldout_problems,
                                       rollouts=s.heldout_rollouts).rollout_rewards
        return self.cache[key]


def withheld_candidates(checkpoints: list[Checkpoint]) -> list[dict]:
    """Every withheld candidate the records hold, with the misreported rollouts that would pass it."""
    from verification.training_record import CandidateEvent, parse_training_record
    from trainer.record import settings_from_json

    out = []
    for ck in checkpoints:
        rec = parse_training_record(ck.files["training.json"])
        s = settings_from_json(rec.settings)
        for e in rec.events:
            if isinstance(e, CandidateEvent) and e.stage == "withheld":
                out.append({"version": e.version, "in_record_of": ck.manifest.version,
                            "flips_to_pass": flips_to_pass(list(e.parent_rewards), list(e.candidate_rewards),
                                                           s.heldout_rollouts, s.gate_margin)})
    return out


def torchrun_difference(workdir: Path, say) -> dict | None:
    """trainer.distributed_check under torchrun with 2 processes against 1 process (tiny model, fixed
    rows, 2 AdamW steps): the adapter error relative to the update from the fresh adapter."""
    from trainer.adapter_files import adapter_from_bytes, adapter_tensors
    from trainer.policy import make_policy
    from trainer.replay import adapter_error
    from verification.model import load_model

    one, two = workdir / "ddp1", workdir / "ddp2"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/local/bin", "OMP_NUM_THREADS": "1"}
    import os

    env = os.environ | env
    t = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "trainer.distributed_check", "--out", str(one)], check=True,
                       cwd=ROOT, env=env, capture_output=True, timeout=600)
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "trainer.distributed_check", "--out", str(two)], check=True, cwd=ROOT, env=env,
                       capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        say(f"torchrun skipped: {exc}")
        return None
    start = adapter_tensors(make_policy(load_model("tiny")))
    a1, _ = adapter_from_bytes((one / "adapter_adamw.safetensors").read_bytes())
    a2, _ = adapter_from_bytes((two / "adapter_adamw.safetensors").read_bytes())
    return {"adapter_error": adapter_error(a2, a1, start), "seconds": time.monotonic() - t}


# ---- the report ----------------------------------------------------------------------------------

def distributions(results: list[dict], side: str, part: int = 0) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in results:
        for name, values in r[side].items():
            out.setdefault(name, []).append(values[part])
    return out


def report_markdown(args, info, results, torchrun, withheld, env) -> tuple[str, dict]:
    honest = distributions(results, "honest")
    honest_opt = distributions(results, "honest", 1)
    dishonest = distributions(results, "dishonest")
    h_all = [x for v in honest.values() for x in v]
    if torchrun:
        h_all.append(torchrun["adapter_error"])
    d_all = [x for v in dishonest.values() for x in v]
    rec = recommend(max(h_all), min(d_all))
    lines = [f"# Replay tolerance and cost: {args.model}\n",
             f"Command: `python scripts/replay_tolerance.py --model {args.model} --windows {args.windows} "
             f"--n-groups {args.n_groups}" + (f" --heldout-problems {args.heldout_problems}" if args.heldout_problems
                                              else "") + f" --publish-every {args.publish_every}"
             + (f" --max-checkpoints {args.max_checkpoints}" if args.max_checkpoints else "") + "`\n",
             f"Machine: {env['processor']}, {env['threads']} torch threads by default, torch {env['torch']}; "
             "2 cores shared with other work, so timings are noisy.\n",
             f"Material: a local network of {info['windows']} windows ({info['n_groups']} groups per bundle, "
             f"2 honest miners, one validator, the trainer with publish_every {info['publish_every']}, "
             f"held-out {info['heldout_problems']} x {info['heldout_rollouts']}, gate margin {info['gate_margin']}) "
             f"in {info['localnet_s']:.0f} s; candidates {info['candidates']}; the nodes' own verdicts: "
             f"{sorted(set(v.split(',')[0] for v in info['node_verdicts'].values()))}.\n",
             "Errors are the replay's: adapter = ||replayed - announced|| / ||announced - start|| (L2 over every "
             "tensor); optimizer = the larger of the AdAMW moments' relative errors. Honest: the record's steps "
             "re-run under the condition against the announced checkpoint. Dishonest: the checkpoint a cheating "
             "trainer would announce (same start state and rows, one thing changed) against the honest replay.\n",
             "## Checkpoints\n",
             md_table(["version", "steps", "rows per step", "real replay", "adapter err", "optimizer err", "gate flips"],
                      [[r["version"], r["steps"], r["rows"], "replays" if r["real_replay"]["ok"] else
                        r["real_replay"]["error"], fmt(r["real_replay"].get("adapter_error", math.nan)),
                        fmt(r["real_replay"].get("optimizer_error", math.nan)),
                        r["real_replay"].get("gate_flips", "-")] for r in results]),
             "\n## Honest differences (min / median / max over checkpoints)\n",
             md_table(["condition", "adapter error", "optimizer error"],
                      [[k, " / ".join(fmt(x) for x in summary(v)), " / ".join(fmt(x) for x in summary(honest_opt[k]))]
                       for k, v in honest.items()]
                      + ([["torchrun 2 processes vs 1 (tiny, distributed_check, 2 AdamW steps)",
                           fmt(torchrun["adapter_error"]), "-"]] if torchrun else [])),
             "\n## Dishonest differences (min / median / max over checkpoints)\n",
             md_table(["cheat", "adapter error", "caught first by"],
                      [[k, " / ".join(fmt(x) for x in summary(v)), results[-1]["caught_by"].get(k)
                        or next(r["caught_by"][k] for r in results if k in r["caught_by"])]
                       for k, v in dishonest.items()]),
             "\n## Separation\n",
             f"Largest honest adapter error {fmt(max(h_all))}; smallest dishonest {fmt(min(d_all))}; ratio "
             f"{fmt(rec['ratio'])}. REPLAY_REL_TOL now {REPLAY_REL_TOL:g}: "
             + (f"inside the gap ({fmt(rec['current_margin_low'])}x above the largest honest, "
                f"{fmt(rec['current_margin_high'])}x below the smallest dishonest)." if rec["current_ok"] else
                "NOT inside the gap.") + "\n"]
    gate_rows = []
    flips_seen = []
    for r in results:
        for k, g in r["gate"].items():
            if k.startswith("threads"):
                gate_rows.append([r["version"], k, g["parent_flips"], g["candidate_flips"]])
                flips_seen.append(max(g["parent_flips"], g["candidate_flips"]))
    n = results[0]["gate"]["n_rollouts"]
    lines += ["\n## The gate\n",
              "Held-out rollouts whose replayed reward differs from the record's, per thread count of the replay:\n",
              md_table(["version", "replay", "parent rollouts differing", "candidate rollouts differing"], gate_rows),
              f"\nRecorded held-out means (parent, candidate) and the rollouts per model a trainer would have to "
              f"misreport to pass the candidate at margin 0: "
              + "; ".join(f"v{r['version']}: {fmt(r['gate']['recorded_means'][0])} -> "
                          f"{fmt(r['gate']['recorded_means'][1])}, {r['gate']['flips_to_pass_at_margin_0']}"
                          for r in results) + ".\n",
              f"Withheld candidates in the records and the rollouts per model that would pass them: "
              f"{withheld or 'none'}.\n",
              f"GATE_REPLAY_FLIPS = {GATE_REPLAY_FLIPS} lets a trainer move the gate's paired difference by up to "
              f"{fmt(gate_shift(GATE_REPLAY_FLIPS, n))} reward ({GATE_REPLAY_FLIPS} rollouts per model of {n}); "
              f"most honest rollouts differing seen here: {max(flips_seen)}.\n"]
    cost = {k: [r["cost"][k] for r in results if k in r["cost"]] for k in results[0]["cost"]}
    lines += ["\n## Cost of one replay (median over checkpoints, seconds)\n",
              md_table(["part", "median s", "max s"],
                       [[k, fmt(statistics.median(v)), fmt(max(v))] for k, v in cost.items()]),
              "\nThe full replay is the nodes' (trainer/replay.replay_checkpoint, cold: its own held-out evaluations): "
              "record checks, rows, step(s), loading the announced model, the parent's and the candidate's held-out "
              "evaluation; the parts are timed inside it. One step is the issue's alternative (replay one step "
              "chosen by the opening randomness).\n"]
    data = {"info": info, "results": results, "torchrun": torchrun, "withheld": withheld, "recommendation": rec,
            "environment": env, "honest_max": max(h_all), "dishonest_min": min(d_all),
            "gate_flips_max": max(flips_seen)}
    return "".join(x if x.endswith("\n") else x + "\n" for x in lines), data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--windows", type=int, default=None, help="local network windows (tiny 6, smollm2 3)")
    ap.add_argument("--n-groups", type=int, default=2)
    ap.add_argument("--publish-every", type=int, default=None, help="tiny 2 (multi-step records), smollm2 1")
    ap.add_argument("--heldout-problems", type=int, default=None, help="default: tiny 6, smollm2 the trainer's")
    ap.add_argument("--max-checkpoints", type=int, default=None, help="measure only the first N announced")
    ap.add_argument("--torchrun", action=argparse.BooleanOptionalAction, default=None,
                    help="measure a 2-process torchrun step (default: on for tiny)")
    ap.add_argument("--gate-threads", action=argparse.BooleanOptionalAction, default=True,
                    help="re-run the held-out gate under each thread count")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the network here (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="measure the network a previous run left in --workdir")
    ap.add_argument("--out", type=str, default=None, help="report name under reports/ (default replay_tolerance_<model>)")
    args = ap.parse_args(argv)
    args.windows = args.windows or (6 if args.model == "tiny" else 3)
    args.publish_every = args.publish_every or (2 if args.model == "tiny" else 1)
    torchrun = args.model == "tiny" if args.torchrun is None else args.torchrun
    say = lambda m: print(m, flush=True)  # noqa: E731
    own_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="replay_tolerance_") as tmp:
        workdir = args.workdir or Path(tmp)
        base, checkpoints, ledger, info = make_material(args.model, workdir, args.windows, args.n_groups,
                                                        args.heldout_problems, args.publish_every, say,
                                                        reuse=args.reuse)
        if not checkpoints:
            say("no checkpoint was announced: nothing to replay")
            return 1
        heldout = HeldoutEvaluator()
        results = []
        by_fp = {ck.manifest.fingerprint: ck for ck in checkpoints}
        mats = {ck.manifest.version: material_of(ck, by_fp.get(ck.manifest.parent_fingerprint), ledger)
                for ck in checkpoints}
        for ck in checkpoints[:args.max_checkpoints]:
            mat = mats[ck.manifest.version]
            window = mat.events[first_step(mat.events)][1]
            other = [row for m in mats.values() for e in m.events if e[0] == "step" and e[1] != window
                     for row in e[2]]
            gate_threads = args.gate_threads and (args.model == "tiny" or not results)  # smollm2: the first only
            results.append(measure_checkpoint(base, ck, by_fp.get(ck.manifest.parent_fingerprint), mat, other,
                                              own_threads=own_threads, gate_threads=gate_threads,
                                              heldout=heldout, say=say))
        withheld = withheld_candidates(checkpoints)
        ddp = torchrun_difference(workdir, say) if torchrun else None
    env = environment()
    markdown, data = report_markdown(args, info, results, ddp, withheld, env)
    jp, mp = write(args.out or f"replay_tolerance_{args.model}", data, markdown)
    rec = data["recommendation"]
    say(f"honest max {fmt(data['honest_max'])}, dishonest min {fmt(data['dishonest_min'])}, ratio {fmt(rec['ratio'])}, "
        f"REPLAY_REL_TOL {REPLAY_REL_TOL:g} {'inside' if rec['current_ok'] else 'OUTSIDE'} the gap; "
        f"most gate rollouts differing {data['gate_flips_max']} (GATE_REPLAY_FLIPS {GATE_REPLAY_FLIPS})")
    say(f"wrote {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
