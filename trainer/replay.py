"""Replaying a checkpoint's training record (docs/protocol.md section 16): the proof of learning.

`replay_checkpoint` re-runs what the record says the trainer did, from the state it started from,
with the rows it names, and compares the result with the announced checkpoint:

  1. the record is the checkpoint's (netuid, version, parent, the adapter and optimizer files the
     manifest lists, the final candidate's generation params and LoRA settings);
  2. it starts where the parent ended (the parent's adapter and optimizer files, by SHA-256; for
     version 1 a stored start adapter whose every lora_B is zero, i.e. exactly the base model) and
     accounts for every window from the one after the parent's record to its last: each window
     the named validator has a ledger entry for is an event;
  3. each window's report hashes to that validator's ledger entry, the rows are recomputed from the
     report and the stored bundles exactly as the trainer takes them (trainer/rows.py: rows under
     the report's verified_root, miners with weight, the staleness rule over the record's lineage,
     non-zero advantages) and must be the record's rows in the record's order; the step is re-run
     and must have the recorded outcome (applied, or skipped by the same breakers);
  4. each candidate comes after exactly `publish_every` applied steps; the gate is re-run (parent
     and candidate on the held-out set under the candidate's params): the recorded rewards may
     differ from the replayed ones in at most GATE_REPLAY_FLIPS rollouts per model (and, where the
     record holds greedy results, those in at most GATE_REPLAY_FLIPS problems per model), and the
     recorded stage must be the gate's decision on the recorded values; a withheld candidate is
     followed by a return to the start state exactly when the settings say so;
  5. the replayed adapter is within REPLAY_REL_TOL of the announced one, relative to the announced
     update, and so are the optimizer moments (relative to their norm), with equal step counts.

Any failure raises ReplayMismatchError naming the event (the checkpoint is void); a malformed or
incomplete record, TrainingRecordError; data this node could not fetch, CheckpointUnavailableError
(no verdict). Nothing here trusts the trainer beyond the bytes its signature binds."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.adapter_files import adapter_from_bytes, adapter_tensors, load_adapter_into
from trainer.checkpointing import merged_model, protocol_adapter_config
from trainer.heldout import evaluate, evaluate_greedy, gate_withholds, greedy_withholds, heldout_seeds
from trainer.optimizer_files import load_optimizer_state, optimizer_from_bytes, optimizer_tensors
from trainer.policy import make_policy
from trainer.record import ReplaySettings, settings_from_json
from trainer.rows import TrainingDataError, accepted_rows, drop_stale
from trainer.step import TrainingRow, make_optimizer, train_step
from verification.canonical import canonical_json
from verification.checkpoint import Manifest
from verification.checkpoint_model import ADAPTER_FILE
from verification.constants import GATE_REPLAY_FLIPS, REPLAY_REL_TOL
from verification.errors import CheckpointUnavailableError, ReplayMismatchError, TrainingRecordError
from verification.generation import GenerationParams
from verification.model import LoadedModel
from verification.training_record import (
    OPTIMIZER_FILE,
    START_FILE,
    TRAINING_FILE,
    CandidateEvent,
    ReturnToAnchor,
    TrainingRecord,
    WindowEvent,
    from_hexfloat,
    parse_training_record,
)


@dataclass(frozen=True)
class ParentCheckpoint:
    """The parent's manifest bytes and files (adapter, optimizer, training record)."""

    manifest_bytes: bytes
    manifest: Manifest
    files: dict[str, bytes]


@dataclass
class ReplayReport:
    version: int
    fingerprint: str
    lines: list[str] = field(default_factory=list)
    adapter_error: float = 0.0  # ||replayed - announced|| / ||announced - start||
    optimizer_error: float = 0.0  # max over moments of ||replayed - announced|| / ||announced||
    gate_flips: int = 0  # most rollouts whose replayed reward differed from the record's, per model
    steps: int = 0
    seconds: float = 0.0


class HeldoutCache:
    """Held-out rollout rewards by (model fingerprint, params), shared across replays."""

    def __init__(self):
        self._cache: dict[tuple[str, bytes], list[int]] = {}

    def rewards(self, lm: LoadedModel, params: GenerationParams, netuid: int, settings: ReplaySettings) -> list[int]:
        model = lm if params == lm.generation else lm.with_generation(params)
        key = (model.fingerprint.hex(), canonical_json([settings.heldout_problems, settings.heldout_rollouts]))
        if key not in self._cache:
            self._cache[key] = evaluate(model, params, netuid, settings.heldout_problems,
                                        rollouts=settings.heldout_rollouts).rollout_rewards
        return self._cache[key]

    def greedy(self, lm: LoadedModel, params: GenerationParams, netuid: int, settings: ReplaySettings) -> list[int]:
        """Per held-out problem, 1 when lm's greedy completion earned the full reward, else 0."""
        model = lm if params == lm.generation else lm.with_generation(params)
        key = (model.fingerprint.hex(), canonical_json(["greedy", settings.heldout_problems]))
        if key not in self._cache:
            result = evaluate_greedy(model, params, heldout_seeds(netuid, settings.heldout_problems))
            self._cache[key] = [int(c) for c in result.correct]
        return self._cache[key]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(files: dict[str, bytes], name: str, what: str) -> bytes:
    if name not in files:
        raise TrainingRecordError(f"the checkpoint lacks {what} ({name})")
    return files[name]


def _rel(diff_sq: float, ref_sq: float) -> float:
    if ref_sq == 0.0:
        return 0.0 if diff_sq == 0.0 else float("inf")
    return float(np.sqrt(diff_sq / ref_sq))


def adapter_error(replayed: dict[str, torch.Tensor], announced: dict[str, torch.Tensor],
                  start: dict[str, torch.Tensor]) -> float:
    """||replayed - announced|| / ||announced - start||, L2 over every tensor, in float64."""
    if set(replayed) != set(announced) or set(announced) != set(start):
        return float("inf")
    d = sum(float(((replayed[k].double() - announced[k].double()) ** 2).sum()) for k in announced)
    u = sum(float(((announced[k].double() - start[k].double()) ** 2).sum()) for k in announced)
    return _rel(d, u)


def optimizer_error(replayed: dict[str, torch.Tensor], announced: dict[str, torch.Tensor]) -> float:
    """The larger of ||m_r - m_a|| / ||m_a|| and ||v_r - v_a|| / ||v_a||; inf when the tensors or
    the step counts differ."""
    if set(replayed) != set(announced):
        return float("inf")
    errors = []
    for part in ("exp_avg", "exp_avg_sq"):
        keys = [k for k in announced if k.endswith(f".{part}")]
        d = sum(float(((replayed[k].double() - announced[k].double()) ** 2).sum()) for k in keys)
        r = sum(float((announced[k].double() ** 2).sum()) for k in keys)
        errors.append(_rel(d, r))
    steps = [k for k in announced if k.endswith(".step")]
    if any(not torch.equal(replayed[k], announced[k]) for k in steps):
        return float("inf")
    return max(errors)


def check_record_binding(record: TrainingRecord, manifest: Manifest, files: dict[str, bytes],
                         base: LoadedModel, settings: ReplaySettings) -> None:
    """The record is this checkpoint's (section 16, rule 1)."""
    if (record.netuid, record.version, record.parent_fingerprint) != (manifest.netuid, manifest.version,
                                                                      manifest.parent_fingerprint):
        raise TrainingRecordError("the training record is for another netuid, version or parent than the manifest")
    if record.end_adapter_sha256 != manifest.file(ADAPTER_FILE).sha256:
        raise TrainingRecordError("the record's adapter is not the manifest's")
    _file(files, OPTIMIZER_FILE, "the optimizer state")
    if record.end_optimizer_sha256 != manifest.file(OPTIMIZER_FILE).sha256:
        raise TrainingRecordError("the record's optimizer state is not the manifest's")
    if record.events[-1].generation != manifest.generation:
        raise TrainingRecordError("the announced candidate's generation params are not the manifest's")
    lora = settings.lora
    if (lora.rank, lora.alpha, list(lora.target_modules)) != (manifest.adapter["rank"], manifest.adapter["alpha"],
                                                            list(manifest.adapter["target_modules"])):
        raise TrainingRecordError("the record's LoRA settings are not the manifest's adapter")
    if record.parent_version == 0 and record.parent_fingerprint != base.fingerprint.hex():
        raise TrainingRecordError("a record starting from version 0 must start from the base model")
    if record.last_window >= manifest.from_window:
        raise TrainingRecordError(f"the record's windows end at {record.last_window}, not before the checkpoint's "
                                  f"from_window {manifest.from_window}")


def _start_state(record: TrainingRecord, files: dict[str, bytes], parent: ParentCheckpoint | None,
                 base: LoadedModel) -> tuple[bytes, bytes | None, TrainingRecord | None]:
    """(start adapter bytes, start optimizer bytes or None, the parent's record or None)."""
    if record.parent_version == 0:
        start = _file(files, START_FILE, "the start adapter of version 1")
        if _sha(start) != record.start_adapter_sha256:
            raise TrainingRecordError("the start adapter does not hash to the record's")
        if record.lineage != ((base.fingerprint.hex(), 0),):
            raise TrainingRecordError("the lineage of version 1 is the base model alone")
        return start, None, None
    if parent is None:
        raise CheckpointUnavailableError("the parent checkpoint was not fetched")
    if _sha(parent.manifest_bytes) != record.parent_manifest_sha256:
        raise ReplayMismatchError("the parent's manifest does not hash to the record's parent manifest SHA-256")
    pm = parent.manifest
    if (pm.fingerprint, pm.version) != (record.parent_fingerprint, record.parent_version):
        raise ReplayMismatchError("the parent manifest is another checkpoint than the record's parent")
    adapter = _file(parent.files, ADAPTER_FILE, "the parent's adapter")
    optimizer = _file(parent.files, OPTIMIZER_FILE, "the parent's optimizer state (missing optimizer state)")
    if _sha(adapter) != record.start_adapter_sha256 or _sha(optimizer) != record.start_optimizer_sha256:
        raise ReplayMismatchError("the record does not start from the parent's adapter and optimizer state")
    parent_record = parse_training_record(_file(parent.files, TRAINING_FILE, "the parent's training record"))
    n = len(record.lineage) - 1
    if record.lineage[1:] != parent_record.lineage[:n]:
        raise ReplayMismatchError("the lineage is not the parent's lineage behind the parent")
    if record.first_window <= parent_record.last_window:
        raise ReplayMismatchError(f"the record's windows start at {record.first_window}, at or before the "
                                  f"parent's last ({parent_record.last_window})")
    return adapter, optimizer, parent_record


def replay_checkpoint(base: LoadedModel, manifest: Manifest, files: dict[str, bytes], *,
                      data: Callable[[str], bytes], ledger: Callable[[int, int], object | None],
                      parent: ParentCheckpoint | None = None, parent_model: LoadedModel | None = None,
                      announced_model: LoadedModel | None = None, heldout: HeldoutCache | None = None,
                      on_line: Callable[[str], None] | None = None) -> ReplayReport:
    """Replay the checkpoint (manifest + files, already checked against the chain). data(sha256 hex)
    returns a report or bundle the record names (CheckpointUnavailableError when it cannot);
    ledger(validator uid, window) the chain's ledger entry or None; parent_model the parent
    merged (the base for version 1; loaded from `parent` when not given); announced_model the
    checkpoint merged (built from the files when not given)."""
    t0 = time.monotonic()
    record = parse_training_record(_file(files, TRAINING_FILE, "the training record"))
    settings = settings_from_json(record.settings)
    check_record_binding(record, manifest, files, base, settings)
    start_adapter, start_optimizer, parent_record = _start_state(record, files, parent, base)
    if parent_record is not None and len(record.lineage) != min(settings.max_staleness + 1,
                                                                len(parent_record.lineage) + 1):
        raise ReplayMismatchError("the lineage is cut short (the staleness rule would drop more rows)")
    report = ReplayReport(record.version, manifest.fingerprint)
    heldout = heldout or HeldoutCache()

    def say(line: str) -> None:
        report.lines.append(line)
        if on_line:
            on_line(line)

    # ---- the start state ----
    try:
        start_tensors, start_config = adapter_from_bytes(start_adapter)
    except ValueError as exc:
        raise TrainingRecordError(f"the start adapter does not decode: {exc}") from None
    if record.parent_version == 0 and any(float(t.abs().max()) != 0.0 for k, t in start_tensors.items()
                                          if k.endswith("lora_B.weight")):
        raise ReplayMismatchError("the start adapter of version 1 is not the base model (a lora_B is not zero)")
    policy = make_policy(base, settings.lora)
    try:
        load_adapter_into(policy, start_tensors, start_config)
    except ValueError as exc:
        raise TrainingRecordError(f"the start adapter does not fit the record's LoRA settings: {exc}") from None
    optimizer = make_optimizer(policy, settings.train)
    if start_optimizer is not None:
        load_optimizer_state(policy, optimizer, optimizer_from_bytes(start_optimizer))
    anchor = (adapter_tensors(policy), copy.deepcopy(optimizer.state_dict()))
    if parent_model is None:
        if record.parent_version == 0:
            parent_model = base
        else:
            from verification.checkpoint_model import load_checkpoint

            parent_model = load_checkpoint(base, parent.manifest, parent.files)
    say(f"v{record.version}: replaying {len(record.events)} events from v{record.parent_version} "
        f"({record.parent_fingerprint[:16]}…), windows {record.first_window}..{record.last_window}, "
        f"validator uid {record.validator_uid}")

    # ---- every window the validator scored since the parent's record is accounted for ----
    recorded = {e.window for e in record.windows()}
    # from the window after the parent's record (no window between two records goes unaccounted)
    first = parent_record.last_window + 1 if parent_record is not None else record.first_window
    for w in range(first, record.last_window + 1):
        if w not in recorded and ledger(record.validator_uid, w) is not None:
            raise ReplayMismatchError(f"window {w} has a ledger entry of validator uid {record.validator_uid} "
                                      f"but the record skips it")

    versions = dict(record.lineage)
    applied_since_candidate = 0
    for i, event in enumerate(record.events):
        if isinstance(event, WindowEvent):
            applied = _replay_window(i, event, record, settings, policy, optimizer, versions, data, ledger, say)
            applied_since_candidate += applied
            report.steps += applied
        elif isinstance(event, CandidateEvent):
            if applied_since_candidate != settings.publish_every:
                raise ReplayMismatchError(f"a candidate after {applied_since_candidate} applied steps, the settings "
                                          f"say {settings.publish_every}", i)
            applied_since_candidate = 0
            final = i == len(record.events) - 1
            if final:
                cand = announced_model or _announced(base, manifest, files)
            else:
                cand = merged_model(base, adapter_tensors(policy), protocol_adapter_config(policy), event.generation)
            flips = _replay_gate(i, event, record, settings, parent_model, cand, heldout, say)
            report.gate_flips = max(report.gate_flips, flips)
            nxt = record.events[i + 1] if not final else None
            wants_return = event.stage == "withheld" and settings.reset_on_withheld
            if wants_return != isinstance(nxt, ReturnToAnchor):
                raise ReplayMismatchError("a withheld candidate is followed by a return to the start state exactly "
                                          "when the settings say so", i)
        else:  # ReturnToAnchor
            prev = record.events[i - 1] if i else None
            if not (isinstance(prev, CandidateEvent) and prev.stage == "withheld" and settings.reset_on_withheld):
                raise ReplayMismatchError("a return to the start state where none is due (only right after a withheld "
                                          "candidate, when the settings say so)", i)
            load_adapter_into(policy, anchor[0], start_config)
            optimizer.load_state_dict(copy.deepcopy(anchor[1]))
            say(f"  event {i}: back to the start state")

    # ---- the result against the announced files ----
    announced, _ = adapter_from_bytes(files[ADAPTER_FILE])
    report.adapter_error = adapter_error(adapter_tensors(policy), announced, start_tensors)
    report.optimizer_error = optimizer_error(optimizer_tensors(policy, optimizer.state_dict()),
                                             optimizer_from_bytes(files[OPTIMIZER_FILE]))
    last = len(record.events) - 1
    say(f"  adapter: replayed vs announced {report.adapter_error:.3g} of the update (tolerance {REPLAY_REL_TOL:g}); "
        f"optimizer moments {report.optimizer_error:.3g}")
    if not report.adapter_error <= REPLAY_REL_TOL:
        raise ReplayMismatchError(f"the replayed adapter differs from the announced one by {report.adapter_error:.3g} "
                                  f"of the update (tolerance {REPLAY_REL_TOL:g})", last)
    if not report.optimizer_error <= REPLAY_REL_TOL:
        raise ReplayMismatchError(f"the replayed optimizer state differs from the announced one by "
                                  f"{report.optimizer_error:.3g} (tolerance {REPLAY_REL_TOL:g})", last)
    report.seconds = time.monotonic() - t0
    say(f"v{record.version} replays: {report.steps} steps, gate flips {report.gate_flips}, {report.seconds:.1f} s")
    return report


def _announced(base: LoadedModel, manifest: Manifest, files: dict[str, bytes]) -> LoadedModel:
    from verification.checkpoint_model import load_checkpoint

    return load_checkpoint(base, manifest, files)


def _fetch(data: Callable[[str], bytes], h: str, what: str) -> bytes:
    blob = data(h)
    if _sha(blob) != h:
        raise CheckpointUnavailableError(f"the {what} fetched does not hash to {h[:16]}…")
    return blob


def _replay_window(i: int, event: WindowEvent, record: TrainingRecord, settings: ReplaySettings, policy, optimizer,
                   versions: dict[str, int], data, ledger, say) -> int:
    """Re-derive the window's rows and re-run its step; returns 1 for an applied step, else 0."""
    w = event.window
    entry = ledger(record.validator_uid, w)
    if event.report_sha256 is None:
        if entry is not None or event.outcome != "not_trained":
            raise ReplayMismatchError(f"window {w}: the record read no report, but the validator has a ledger entry "
                                      f"or a step is claimed", i)
        say(f"  event {i}: window {w}: no report (no ledger entry), not trained")
        return 0
    if entry is None:
        raise ReplayMismatchError(f"window {w}: validator uid {record.validator_uid} has no ledger entry, so no row "
                                  f"of it is provably verified", i)
    if bytes.fromhex(event.report_sha256) != entry.report_hash:
        raise ReplayMismatchError(f"window {w}: the record's report is not the one validator uid "
                                  f"{record.validator_uid} recorded in the ledger", i)
    report_bytes = _fetch(data, event.report_sha256, f"report of window {w}")
    bundles = {uid: _fetch(data, h, f"bundle of uid {uid} in window {w}") for uid, h in event.bundles.items()}
    try:
        rows = accepted_rows(report_bytes, bundles.get, entry.report_hash)
    except TrainingDataError as exc:
        if event.outcome != "not_trained":
            raise ReplayMismatchError(f"window {w}: the rows cannot be tied to the ledger's report ({exc}), "
                                      f"yet the record trained on them", i) from None
        say(f"  event {i}: window {w}: not trained ({exc})")
        return 0
    if event.outcome == "not_trained":
        raise ReplayMismatchError(f"window {w}: the record says not trained, but its rows verify", i)
    fresh, stale = drop_stale(rows.rows, versions, record.parent_version, settings.max_staleness)
    trainable = [r for r in fresh if r.advantage != 0.0]
    if stale != event.dropped_stale:
        raise ReplayMismatchError(f"window {w}: {stale} stale rows, the record says {event.dropped_stale}", i)
    if not trainable or len(trainable) < record.world_size:
        if event.outcome != "no_step":
            raise ReplayMismatchError(f"window {w}: {len(trainable)} trainable rows give no step, the record "
                                      f"says {event.outcome}", i)
        say(f"  event {i}: window {w}: no step ({len(trainable)} trainable rows)")
        return 0
    leaves = tuple(r.leaf.hex() for r in trainable)
    if leaves != event.rows:
        extra = [x for x in event.rows if x not in set(leaves)]
        missing = [x for x in leaves if x not in set(event.rows)]
        raise ReplayMismatchError(
            f"window {w}: the record's rows are not the verified rows in the trainer's order "
            f"({len(event.rows)} recorded, {len(leaves)} verified; {len(extra)} not under the report's verified_root, "
            f"{len(missing)} verified rows left out)", i)
    if event.outcome == "no_step":
        raise ReplayMismatchError(f"window {w}: {len(trainable)} trainable rows, the record ran no step", i)
    batch = [TrainingRow(r.prompt, r.completion, r.logprobs, r.advantage) for r in trainable]
    step = train_step(policy, optimizer, batch, settings.train)
    outcome = "applied" if step.applied else "skipped"
    recorded_norm = from_hexfloat(event.step["grad_norm"])
    say(f"  event {i}: window {w}: {len(batch)} rows, step {outcome} ({step.reason}), grad norm {step.grad_norm:.6g} "
        f"(recorded {recorded_norm:.6g})")
    if outcome != event.outcome or (not step.applied and step.reason != event.reason):
        raise ReplayMismatchError(f"window {w}: the step was {outcome} ({step.reason}), the record says "
                                  f"{event.outcome} ({event.reason})", i)
    return int(step.applied)


def _replay_gate(i: int, event: CandidateEvent, record: TrainingRecord, settings: ReplaySettings,
                 parent_model: LoadedModel, cand: LoadedModel, heldout: HeldoutCache, say) -> int:
    n = settings.heldout_problems * settings.heldout_rollouts
    if len(event.parent_rewards) != n:
        raise ReplayMismatchError(f"the gate's record holds {len(event.parent_rewards)} rollouts, the settings give {n}", i)
    before = heldout.rewards(parent_model, event.generation, record.netuid, settings)
    after = heldout.rewards(cand, event.generation, record.netuid, settings)
    flips = (sum(a != b for a, b in zip(before, event.parent_rewards)),
             sum(a != b for a, b in zip(after, event.candidate_rewards)))
    withheld = gate_withholds(list(event.parent_rewards), list(event.candidate_rewards), settings.heldout_rollouts,
                              settings.gate_margin)
    replayed = gate_withholds(before, after, settings.heldout_rollouts, settings.gate_margin)
    say(f"  event {i}: candidate v{event.version} {event.stage}: gate replayed ({'withhold' if replayed else 'pass'}), "
        f"rollouts differing from the record: parent {flips[0]}, candidate {flips[1]} (at most {GATE_REPLAY_FLIPS})")
    if max(flips) > GATE_REPLAY_FLIPS:
        raise ReplayMismatchError(f"candidate v{event.version}: the held-out rewards recorded differ from the replayed "
                                  f"gate in {max(flips)} rollouts (at most {GATE_REPLAY_FLIPS})", i)
    if event.parent_greedy:  # the gate measured greedy decoding too: it is re-run the same way
        if len(event.parent_greedy) != settings.heldout_problems:
            raise ReplayMismatchError(f"the gate's record holds {len(event.parent_greedy)} greedy results, the "
                                      f"settings give {settings.heldout_problems} problems", i)
        g_before = heldout.greedy(parent_model, event.generation, record.netuid, settings)
        g_after = heldout.greedy(cand, event.generation, record.netuid, settings)
        g_flips = (sum(a != b for a, b in zip(g_before, event.parent_greedy)),
                   sum(a != b for a, b in zip(g_after, event.candidate_greedy)))
        say(f"  event {i}: greedy gate replayed, problems differing from the record: parent {g_flips[0]}, "
            f"candidate {g_flips[1]} (at most {GATE_REPLAY_FLIPS})")
        if max(g_flips) > GATE_REPLAY_FLIPS:
            raise ReplayMismatchError(f"candidate v{event.version}: the greedy results recorded differ from the "
                                      f"replayed gate in {max(g_flips)} problems (at most {GATE_REPLAY_FLIPS})", i)
        withheld = withheld or greedy_withholds(event.parent_greedy, event.candidate_greedy, settings.gate_margin)
        flips = (max(flips[0], g_flips[0]), max(flips[1], g_flips[1]))
    if withheld != (event.stage == "withheld"):
        raise ReplayMismatchError(f"candidate v{event.version} is {event.stage}, but its recorded held-out results "
                                  f"{'fail' if withheld else 'pass'} the gate", i)
    return max(flips)
