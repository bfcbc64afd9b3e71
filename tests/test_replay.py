"""Proof of learning on the tiny model (issue 26): an honest local network's checkpoints all replay
from their training records, and every dishonest or broken checkpoint is void by one typed error,
the previous checkpoint staying in force, never a silent switch.

One local network runs (module fixture, publish_every=2 so each record spans two windows); every
manipulation is then a re-signed copy of its v2 (parent v1), signed with the trainer key the chain
knows, published in the same store and announced on the same embedded chain for one later window,
whose honest v2 announcement the registry's admin voids first: v1, the parent, must be the model in
force there. A node's ModelResolver with a CheckpointReplayer judges them all."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rollproof.localnet as localnet
from adapters.checkpoints import ModelResolver
from adapters.fetch import Fetcher
from trainer.checkpointing import BuiltCheckpoint, attach_files
from trainer.service import TrainerConfig
from verification.canonical import canonical_json
from verification.challenge import window_of_block, window_start_block
from verification.checkpoint import manifest_hash, parse_manifest
from verification.checkpoint_model import ADAPTER_FILE
from verification.constants import (
    ACTIVATION_WINDOWS,
    GATE_REPLAY_FLIPS,
    MAX_ANNOUNCE_AHEAD_WINDOWS,
    MAX_TRAINING_RECORD_BYTES,
    REPLAY_REL_TOL,
)
from verification.errors import (
    CheckpointError,
    CheckpointUnavailableError,
    ReplayMismatchError,
    TrainingRecordError,
)
from verification.training_record import DATA_DIR, OPTIMIZER_FILE, TRAINING_FILE, parse_training_record

from replay_env import run_localnet_keeping_chain
from trainer_env import parity_registered

pytestmark = [pytest.mark.slow, pytest.mark.replay]  # local networks and replays: minutes on 2 cores (README: the replay test command)

PUBLISH_EVERY = 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Checkpoint:
    directory: Path
    manifest: object
    files: dict[str, bytes]

    @property
    def record(self) -> dict:
        return json.loads(self.files[TRAINING_FILE])

    @property
    def manifest_bytes(self) -> bytes:
        return (self.directory / "manifest.json").read_bytes()


def _read_checkpoint(directory: Path) -> Checkpoint:
    manifest = parse_manifest((directory / "manifest.json").read_bytes())
    return Checkpoint(directory, manifest, {f.name: (directory / f.name).read_bytes() for f in manifest.files})


@dataclass
class Net:
    lm: object
    root: Path
    result: object
    chain: object
    trainer_key: object
    checkpoints: dict[int, Checkpoint]  # version -> the honest checkpoint in the store
    base_fp: str

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def ckpt_dir(self) -> Path:
        return self.store / "rollproof" / str(localnet.NETUID) / "checkpoints"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """One local network (5 windows, no cheaters), with its chain kept for the replays after it."""
    from verification.model import load_model

    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        root = tmp_path_factory.mktemp("replay")
        cfg = TrainerConfig(heldout_problems=6, heldout_rollouts=2, gate_margin=1.0, publish_every=PUBLISH_EVERY)
        # keep the run's chain: the replays need its ledger
        result, chain = run_localnet_keeping_chain(lm, root, windows=5, n_groups=2, cheaters=False, trainer_config=cfg)
        ckpt_dir = root / "store" / "rollproof" / str(localnet.NETUID) / "checkpoints"
        checkpoints = {}
        for pub in result.publications:
            if pub.stage == "announced":
                checkpoints[pub.version] = _read_checkpoint(ckpt_dir / pub.fingerprint)
        yield Net(lm, root, result, chain, localnet._key("trainer"), checkpoints, lm.fingerprint.hex())


# ---- the honest run --------------------------------------------------------------------------------
def test_an_honest_run_replays_every_checkpoint_and_switches_to_them(net):
    result = net.result
    assert result.ok, result.problems
    announced = [p for p in result.publications if p.stage == "announced"]
    assert [p.version for p in announced] == [1, 2], [(p.version, p.stage, p.note) for p in result.publications]
    # the nodes of the run replayed every checkpoint they used, and voided none
    assert result.replays and set(result.replays) <= {p.fingerprint for p in announced}
    assert all(v.startswith("replayed: 2 steps") for v in result.replays.values()), result.replays
    # the windows ran under the new checkpoint once it was in force: the model in force changed
    v1 = announced[0]
    assert result.checkpoints[min(result.checkpoints)] == net.base_fp
    assert {w: fp for w, fp in result.checkpoints.items() if w >= v1.from_window} == {
        w: v1.fingerprint for w in result.checkpoints if w >= v1.from_window}
    assert any(w >= v1.from_window for w in result.checkpoints)
    # each record spans the windows since its parent's, two applied steps and the announced candidate
    r1, r2 = (parse_training_record(net.checkpoints[v].files[TRAINING_FILE]) for v in (1, 2))
    assert r1.parent_version == 0 and r2.parent_version == 1 and r2.first_window == r1.last_window + 1
    assert [e.outcome for e in r2.windows()].count("applied") == PUBLISH_EVERY


def test_a_node_replays_each_announced_checkpoint_within_the_tolerance(judged):
    """v2 was never in force during the run: a fresh node replays it (and v1 behind it)."""
    replayed = {r.fingerprint: r for r in judged.replayer.reports.values()}
    for version in (1, 2):
        fp = judged.net.checkpoints[version].manifest.fingerprint
        report = replayed[fp]
        assert report.version == version and report.steps == PUBLISH_EVERY
        assert report.adapter_error <= REPLAY_REL_TOL and report.optimizer_error <= REPLAY_REL_TOL
        assert report.gate_flips <= GATE_REPLAY_FLIPS
        assert any("replays" in line for line in report.lines)
    assert judged.honest_v2.fingerprint.hex() == judged.net.checkpoints[2].manifest.fingerprint


# ---- manipulated checkpoints ---------------------------------------------------------------------
class Recording:
    """The replay hook, passing through, keeping what it raised per manifest location (for the type
    and the event; the resolver keeps only the message)."""

    def __init__(self, replayer):
        self.replayer = replayer
        self.raised: dict[str, Exception] = {}

    def __call__(self, location, manifest, files, lm):
        try:
            return self.replayer(location, manifest, files, lm)
        except CheckpointError as exc:
            self.raised[location] = exc
            raise


@dataclass
class Case:
    """A manipulated copy of v2: what it is, and the one error its replay must raise."""

    name: str
    error: type
    match: str
    step: str | None  # "window" (the first applied window event), "return", "last", or None
    location: str = ""
    manifest_bytes: bytes = b""
    announcement: object = None


@dataclass
class Judged:
    net: Net
    resolver: ModelResolver
    replayer: object
    recording: Recording
    cases: dict[str, Case] = field(default_factory=dict)
    window: int = 0  # the window every case is announced for
    in_force: object = None  # model_for(window)
    honest_v2: object = None  # model_for(v2's from_window)
    unavailable: Case | None = None
    unavailable_window: int = 0
    events: dict[str, int] = field(default_factory=dict)
    registry: CollectorRegistry | None = None  # the node's metrics (role "validator")


def _resign(net: Net, manifest, files: dict[str, bytes], from_window: int):
    """The manifest listing exactly `files`, for from_window, signed with the chain's trainer key."""
    return attach_files(BuiltCheckpoint(manifest, dict(files), None), net.trainer_key, from_window, {})


def _signer(net: Net, manifest, files: dict[str, bytes]):
    return lambda from_window: _resign(net, manifest, files, from_window)


def _announce_window(chain, after: int) -> int:
    """The next from_window after `after` the registry takes now, mining up to the window it lands
    in when `after` is too far ahead (at most MAX_ANNOUNCE_AHEAD_WINDOWS)."""
    landing = window_of_block(chain.current_block() + 1)
    window = max(after + 1, landing + ACTIVATION_WINDOWS)
    if window > landing + MAX_ANNOUNCE_AHEAD_WINDOWS:
        chain.mine(window_start_block(window - MAX_ANNOUNCE_AHEAD_WINDOWS) - 1 - chain.current_block())
    return window


def _publish(directory: Path, built, data_from: Path | None, data: dict[str, bytes] | None = None,
             drop: str | None = None) -> str:
    directory.mkdir(parents=True)
    if data_from is not None:
        shutil.copytree(data_from / DATA_DIR, directory / DATA_DIR)
    for h, blob in (data or {}).items():
        (directory / DATA_DIR / h).write_bytes(blob)
    if drop:
        (directory / DATA_DIR / drop).unlink()
    for name, blob in built.files.items():
        (directory / name).write_bytes(blob)
    (directory / "manifest.json").write_bytes(built.manifest.to_bytes())
    return (directory / "manifest.json").as_uri()


def _record_bytes(record: dict) -> bytes:
    return canonical_json(record)


FABRICATED = _sha(b"a row no validator verified")


def _manipulations(net: Net, v2: Checkpoint, ev: dict[str, int]):
    """name -> (Case, function(record dict, files dict) -> extra data files or None); ev: the event
    indices of v2's record ("window": its first applied window event, "last")."""
    w0 = ev["window"]

    def fabricated_row(r, files):
        r["events"][w0]["rows"][0] = FABRICATED

    def added_row(r, files):
        r["events"][w0]["rows"].append(FABRICATED)

    def missing_optimizer(r, files):
        del files[OPTIMIZER_FILE]

    def another_parent(r, files):  # the record says it trained from the base model, the manifest says v1
        r["parent"] = {"fingerprint": net.base_fp, "version": 0, "manifest_sha256": None}
        r["start"]["optimizer_sha256"] = None
        r["lineage"] = [{"fingerprint": net.base_fp, "version": 0}]

    def parent_manifest(r, files):  # the parent's fingerprint, but another manifest of it
        r["parent"]["manifest_sha256"] = _sha(v2.manifest_bytes)

    def outcome_differs(r, files):
        r["events"][w0]["outcome"] = "skipped"
        r["events"][w0]["reason"] = "grad_norm"

    def non_finite_step(r, files):
        r["events"][w0]["step"]["loss"] = "nan"

    def report_not_ledger(r, files):
        report = json.loads(_data(v2, r["events"][w0]["report_sha256"]))
        report["miners"][0]["weight"] += 1
        edited = canonical_json(report)
        r["events"][w0]["report_sha256"] = _sha(edited)
        return {_sha(edited): edited}

    def window_left_out(r, files):
        del r["events"][w0]
        r["windows"]["first"] = r["events"][w0]["window"]

    def return_not_due(r, files):
        r["events"].insert(w0 + 1, {"kind": "return_to_anchor"})

    def faked_gate(r, files):  # a gate "won" by more than the replay's allowance of differing rollouts
        heldout = r["events"][-1]["heldout"]
        heldout["candidate"] = [1_000_000] * len(heldout["candidate"])
        heldout["parent"] = [0] * len(heldout["parent"])

    return {
        "fabricated_row": (Case("fabricated_row", ReplayMismatchError, "1 not under the report's verified_root",
                                "window"), fabricated_row),
        "added_row": (Case("added_row", ReplayMismatchError, "1 not under the report's verified_root", "window"),
                      added_row),
        "missing_optimizer": (Case("missing_optimizer", TrainingRecordError, "lacks the optimizer state", None),
                              missing_optimizer),
        "another_parent": (Case("another_parent", TrainingRecordError, "another netuid, version or parent", None),
                           another_parent),
        "parent_manifest": (Case("parent_manifest", ReplayMismatchError,
                                 "the parent's manifest does not hash to the record's", None), parent_manifest),
        "outcome_differs": (Case("outcome_differs", ReplayMismatchError, "the step was applied", "window"),
                            outcome_differs),
        "non_finite_step": (Case("non_finite_step", TrainingRecordError, "loss and gradient norm are finite", None),
                            non_finite_step),
        "report_not_ledger": (Case("report_not_ledger", ReplayMismatchError, "ledger", "window"), report_not_ledger),
        "window_left_out": (Case("window_left_out", ReplayMismatchError, "has a ledger entry of validator uid", None),
                            window_left_out),
        "return_not_due": (Case("return_not_due", ReplayMismatchError, "none is due", "return"), return_not_due),
        "faked_gate": (Case("faked_gate", ReplayMismatchError, "held-out rewards recorded differ from the replayed",
                            "last"), faked_gate),
    }


def _data(ckpt: Checkpoint, h: str) -> bytes:
    return (ckpt.directory / DATA_DIR / h).read_bytes()


def _tampered_adapter(net: Net, v1: Checkpoint, v2: Checkpoint, scale: float = 10.0):
    """v2 with its adapter moved by `scale` times the tolerance (of its update from v1) and the
    record naming that adapter: signed, consistent, and not what the steps produce."""
    import torch

    from trainer.adapter_files import adapter_from_bytes, load_adapter_into
    from trainer.checkpointing import build_checkpoint
    from trainer.policy import make_policy
    from trainer.record import settings_from_json

    tensors, config = adapter_from_bytes(v2.files[ADAPTER_FILE])
    start, _ = adapter_from_bytes(v1.files[ADAPTER_FILE])
    update = sum(float(((tensors[k].double() - start[k].double()) ** 2).sum()) for k in tensors) ** 0.5
    assert update > 0
    name = sorted(k for k in tensors if k.endswith("lora_B.weight"))[0]
    delta = torch.ones_like(tensors[name])
    tensors[name] = tensors[name] + delta * (scale * REPLAY_REL_TOL * update / float(delta.norm()))
    record = v2.record
    policy = make_policy(net.lm, settings_from_json(record["settings"]).lora)
    load_adapter_into(policy, tensors, config)
    built = build_checkpoint(net.lm, policy, keypair=net.trainer_key, netuid=v2.manifest.netuid,
                             version=v2.manifest.version, from_window=v2.manifest.from_window,
                             parent_fingerprint=bytes.fromhex(v2.manifest.parent_fingerprint),
                             params=v2.manifest.generation)
    assert built.manifest.fingerprint != v2.manifest.fingerprint
    adapter_sha = _sha(built.files[ADAPTER_FILE])
    record["end"]["adapter_sha256"] = record["events"][-1]["adapter_sha256"] = adapter_sha
    return attach_files(built, net.trainer_key, v2.manifest.from_window, {OPTIMIZER_FILE: v2.files[OPTIMIZER_FILE],
                                                         TRAINING_FILE: _record_bytes(record)})


@pytest.fixture(scope="module")
def judged(net):
    """Every manipulation published and announced for one window W after the honest v2's
    announcement was voided; a fresh node's resolver asked for W once (judging them all)."""
    from trainer.replay_node import CheckpointReplayer

    chain, v1, v2 = net.chain, net.checkpoints[1], net.checkpoints[2]
    fetcher = Fetcher(file_roots=[net.store])
    registry = CollectorRegistry()
    replayer = CheckpointReplayer(chain, net.lm, fetcher, registry=registry, role="validator")
    recording = Recording(replayer)
    resolver = ModelResolver(chain, net.lm, fetcher, replay=recording, registry=registry, role="validator")
    judged = Judged(net, resolver, replayer, recording, registry=registry)
    record = v2.record
    kinds = [e["kind"] for e in record["events"]]
    applied = [i for i, e in enumerate(record["events"]) if e["kind"] == "window" and e["outcome"] == "applied"]
    judged.events = {"window": applied[0], "return": applied[0] + 1, "last": len(kinds) - 1}
    assert applied[0] == 0 and kinds.count("window") >= 2, kinds  # the manipulations below rely on it

    # a fresh node: the honest v2 (never in force during the run) replays, with v1 behind it
    judged.honest_v2 = resolver.model_for(v2.manifest.from_window)

    # the registry's admin voids the honest v2: from `window` on, v1 is the checkpoint in force
    anns = chain.checkpoint_announcements()
    index = next(i for i, a in enumerate(anns) if a.fingerprint.hex() == v2.manifest.fingerprint)
    chain.void_announcement(index)

    # each case: (Case, signed for a window -> the checkpoint, its directory, where its data comes from, extra data)
    manipulations = _manipulations(net, v2, judged.events)
    todo = []
    for name, (case, mutate) in manipulations.items():
        r, files = v2.record, dict(v2.files)
        extra = mutate(r, files)
        files[TRAINING_FILE] = _record_bytes(r)
        todo.append((case, _signer(net, v2.manifest, files), net.ckpt_dir / f"case-{name}", v2.directory, extra))
    # a record larger than the bound (the rest of it honest)
    oversized = dict(v2.files)
    oversized[TRAINING_FILE] += b" " * (MAX_TRAINING_RECORD_BYTES + 1 - len(oversized[TRAINING_FILE]))
    todo.append((Case("oversized_record", TrainingRecordError, f"limit {MAX_TRAINING_RECORD_BYTES}", None),
                 _signer(net, v2.manifest, oversized), net.ckpt_dir / "case-oversized_record", v2.directory, None))
    # an adapter off the replay by 10x the tolerance, record and manifest consistent with it
    tampered = _tampered_adapter(net, v1, v2)
    todo.append((Case("tampered_adapter", ReplayMismatchError, "differs from the announced one by", "last"),
                 _signer(net, tampered.manifest, tampered.files), net.ckpt_dir / "case-tampered_adapter",
                 v2.directory, None))
    # the child of a void checkpoint: v2 (honest steps) whose parent is a v1 with a fabricated row, the
    # parent found beside it by fingerprint as always (docs/protocol.md section 16)
    evil_v1_record = v1.record
    first = next(i for i, e in enumerate(evil_v1_record["events"]) if e["kind"] == "window" and e["rows"])
    evil_v1_record["events"][first]["rows"][0] = FABRICATED
    evil_v1 = _resign(net, v1.manifest, {**v1.files, TRAINING_FILE: _record_bytes(evil_v1_record)},
                      v1.manifest.from_window)
    tree = net.ckpt_dir.parent / "void-lineage"
    _publish(tree / v1.manifest.fingerprint, evil_v1, v1.directory)
    child_record = v2.record
    child_record["parent"]["manifest_sha256"] = _sha(evil_v1.manifest.to_bytes())
    todo.append((Case("child_of_void", ReplayMismatchError, "its parent v1 is not valid", None),
                 _signer(net, v2.manifest, {**v2.files, TRAINING_FILE: _record_bytes(child_record)}),
                 tree / "child", v2.directory, None))

    # the registry takes one announcement per window, in increasing order
    window = 0
    for case, sign_for, directory, data_from, extra in todo:
        window = _announce_window(chain, window)
        built = sign_for(window)
        case.location = _publish(directory, built, data_from, extra)
        case.manifest_bytes = built.manifest.to_bytes()
        chain.announce_checkpoint(net.trainer_key, window, bytes.fromhex(built.manifest.fingerprint),
                                  manifest_hash(case.manifest_bytes), case.location)
        judged.cases[case.name] = case
    judged.window = window

    # data the node cannot fetch: the honest v2 for a later window, one data file deleted
    record_v2 = parse_training_record(v2.files[TRAINING_FILE])
    judged.unavailable_window = _announce_window(chain, window)
    unavailable = _resign(net, v2.manifest, v2.files, judged.unavailable_window)
    case = Case("unavailable", CheckpointUnavailableError, "cannot fetch training data", None)
    case.location = _publish(net.ckpt_dir / "case-unavailable", unavailable, v2.directory,
                             drop=record_v2.data_hashes()[0])
    case.manifest_bytes = unavailable.manifest.to_bytes()
    judged.unavailable = case
    chain.announce_checkpoint(net.trainer_key, judged.unavailable_window, bytes.fromhex(v2.manifest.fingerprint),
                              manifest_hash(case.manifest_bytes), case.location)

    anns = {a.manifest_hash: a for a in chain.checkpoint_announcements()}
    for c in [*judged.cases.values(), judged.unavailable]:
        c.announcement = anns[manifest_hash(c.manifest_bytes)]
        assert c.announcement.valid
    judged.in_force = resolver.model_for(window)
    yield judged


CASES = ["fabricated_row", "added_row", "missing_optimizer", "another_parent", "parent_manifest", "outcome_differs",
         "non_finite_step", "report_not_ledger", "window_left_out", "return_not_due", "faked_gate",
         "oversized_record", "tampered_adapter", "child_of_void"]


def test_the_parent_stays_in_force_when_its_successors_do_not_replay(judged):
    v1 = judged.net.checkpoints[1].manifest.fingerprint
    assert judged.in_force.fingerprint.hex() == v1
    assert set(judged.cases) == set(CASES)
    # every manipulation was judged void: one verdict each, none loaded as a model
    verdicts = judged.resolver.invalid_verdicts()
    for case in judged.cases.values():
        assert (case.announcement.verdict_key, judged.net.trainer_key.ss58_address) in verdicts, case.name
    assert judged.resolver.model_for(judged.window).fingerprint.hex() == v1  # the verdicts are kept


@pytest.mark.parametrize("name", CASES)
def test_a_checkpoint_that_does_not_replay_is_void_by_one_typed_error(judged, name):
    case = judged.cases[name]
    exc = judged.recording.raised.get(case.location)
    assert exc is not None, f"{name} was not refused (model in force: {judged.in_force.fingerprint.hex()[:16]})"
    assert type(exc) is case.error, (name, type(exc), str(exc))
    assert case.match in str(exc), (name, str(exc))
    expected_step = None if case.step is None else judged.events[case.step]
    if isinstance(exc, ReplayMismatchError):
        assert exc.step == expected_step, (name, exc.step, expected_step, str(exc))
    verdict = judged.resolver.invalid_verdicts()[(case.announcement.verdict_key, judged.net.trainer_key.ss58_address)]
    assert str(exc) in verdict
    if expected_step is not None:
        assert f"event {expected_step}: " in verdict
    # the replayer keeps the verdict by manifest SHA-256: the same bytes are never replayed again
    assert _sha(case.manifest_bytes) in judged.replayer.invalid
    # from its window on, the parent stays in force
    v1 = judged.net.checkpoints[1].manifest.fingerprint
    assert judged.resolver.model_for(case.announcement.from_window).fingerprint.hex() == v1


def test_the_window_left_out_is_named(judged):
    v2 = judged.net.checkpoints[2]
    left_out = v2.record["events"][0]["window"]
    assert judged.net.chain.ledger_entry(v2.record["validator"]["uid"], left_out) is not None
    assert f"window {left_out} has a ledger entry" in str(judged.recording.raised[judged.cases["window_left_out"].location])


def test_the_faked_gate_differs_in_more_rollouts_than_the_tolerance(judged):
    """Precondition of the faked_gate case: its recorded rewards differ from the honest ones (which
    the replay recomputes) in more than GATE_REPLAY_FLIPS rollouts of one model."""
    heldout = judged.net.checkpoints[2].record["events"][-1]["heldout"]
    changed = max(sum(r != 1_000_000 for r in heldout["candidate"]), sum(r != 0 for r in heldout["parent"]))
    assert changed > GATE_REPLAY_FLIPS, heldout


def test_a_child_of_a_void_checkpoint_is_void(judged):
    case = judged.cases["child_of_void"]
    exc = judged.recording.raised[case.location]
    assert "1 not under the report's verified_root" in str(exc)  # why the parent is void
    # the parent was judged on its own manifest: its verdict is kept too
    evil_parent = [why for why in judged.replayer.invalid.values() if why.startswith("v1 does not replay")]
    assert evil_parent, judged.replayer.invalid


def test_unavailable_training_data_skips_the_window_and_falls_back_to_nothing(judged):
    case = judged.unavailable
    for _ in range(2):  # no verdict is kept: each try fetches again, and fails again
        with pytest.raises(CheckpointUnavailableError, match="cannot fetch training data"):
            judged.resolver.model_for(judged.unavailable_window)
    assert (case.announcement.verdict_key, judged.net.trainer_key.ss58_address) not in judged.resolver.invalid_verdicts()
    assert _sha(case.manifest_bytes) not in judged.replayer.invalid
    assert type(judged.recording.raised[case.location]) is CheckpointUnavailableError
    # the windows before it are unaffected
    assert judged.resolver.model_for(judged.window).fingerprint.hex() == judged.net.checkpoints[1].manifest.fingerprint


def _node_metrics(registry) -> dict[tuple, float]:
    """(sample name, verdict or "") -> value of the role "validator" node metrics, as scraped."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.labels.get("role") == "validator":
                out[(s.name, s.labels.get("verdict", ""))] = s.value
    return out


def test_judgements_are_counted_by_verdict(judged):
    """The node's metrics: every void manipulation counted invalid once, the honest checkpoints the
    resolver used valid once each, an unavailable checkpoint once per failed attempt, each replay run
    to its end timed once, and the version in force of the window last resolved."""
    v1 = judged.net.checkpoints[1].manifest
    assert judged.resolver.model_for(judged.window).fingerprint.hex() == v1.fingerprint
    before = _node_metrics(judged.registry)
    with pytest.raises(CheckpointUnavailableError):
        judged.resolver.model_for(judged.unavailable_window)
    after = _node_metrics(judged.registry)
    judged_total = "rollproof_checkpoints_judged_total"
    assert after[(judged_total, "invalid")] == len(judged.resolver.invalid_verdicts()) == len(CASES)
    assert after[(judged_total, "valid")] == 2  # the honest v2 (a fresh node's first judgement), then v1
    assert after[(judged_total, "unavailable")] == before.get((judged_total, "unavailable"), 0) + 1
    replays = after[("rollproof_checkpoint_replay_seconds_count", "")]
    assert len(judged.replayer.reports) <= replays <= len(judged.replayer.reports) + len(judged.replayer.invalid)
    assert after[("rollproof_checkpoint_replay_seconds_sum", "")] > 0
    assert after[("rollproof_checkpoint_version", "")] == v1.version == 1  # the failed resolution moved nothing


@pytest.fixture(scope="module")
def heldout():
    from trainer.replay import HeldoutCache

    return HeldoutCache()  # the parent's held-out rewards, evaluated once for both cases


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_adapter_tolerance_is_where_it_is_stated(net, heldout, scale):
    """The same tampering at half and at twice REPLAY_REL_TOL of the update: replay_checkpoint
    accepts the first (within float noise of an honest replay on other hardware) and refuses the
    second at the announced candidate."""
    from trainer.replay import ParentCheckpoint, replay_checkpoint

    v1, v2 = net.checkpoints[1], net.checkpoints[2]
    built = _tampered_adapter(net, v1, v2, scale)
    kwargs = dict(data=lambda h: _data(v2, h), ledger=net.chain.ledger_entry,
                  parent=ParentCheckpoint(v1.manifest_bytes, v1.manifest, v1.files), heldout=heldout)
    if scale < 1:
        report = replay_checkpoint(net.lm, built.manifest, built.files, **kwargs)
        assert report.adapter_error == pytest.approx(scale * REPLAY_REL_TOL, rel=0.05)
    else:
        with pytest.raises(ReplayMismatchError, match="differs from the announced one by") as info:
            replay_checkpoint(net.lm, built.manifest, built.files, **kwargs)
        assert info.value.step == len(v2.record["events"]) - 1
