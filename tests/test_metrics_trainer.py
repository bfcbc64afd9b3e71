"""The trainer's metrics (trainer/metrics.py, its share of adapters/telemetry.py's NodeMetrics) and
every node's checkpoint judgements, recorded by a real Trainer on the tiny model over the windows a
local network's validator scored, and by a real ModelResolver with a CheckpointReplayer judging
what that trainer announced on the same chain; read back through the Prometheus text format as a
scraper sees it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rollproof.localnet as localnet
from verification.constants import ACTIVATION_WINDOWS, MAX_ANNOUNCE_AHEAD_WINDOWS, MAX_MANIFEST_BYTES, PROTOCOL_VERSION

from replay_env import run_localnet_keeping_chain
from trainer_env import parity_registered


def scrape(registry: CollectorRegistry) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, parsed from the exposition a scraper reads."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def counted(samples: dict, name: str, **labels) -> float:
    """A counter's value; 0 when the series was never touched."""
    return value(samples, name, **labels) or 0.0


@dataclass
class Net:
    lm: object
    root: Path
    chain: object
    validator: tuple[int, str]  # (uid, hotkey)
    windows: list[int]  # the windows the validator scored

    @property
    def validator_dir(self) -> Path:
        return self.root / "validator"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A local network of 2 honest miners and a validator (no trainer) over 2 windows, its chain kept:
    the trainer announces on it and a node's replay reads the validator's ledger entries from it."""
    from verification.model import load_model

    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        root = tmp_path_factory.mktemp("net")
        result, chain = run_localnet_keeping_chain(lm, root, windows=2, n_groups=2, cheaters=False, train=False)
        assert result.ok, result.problems
        vuid = next(uid for uid, (_, kind) in result.names.items() if kind == "validator")
        windows = sorted(w.window for w in result.windows)
        yield Net(lm, root, chain, (vuid, localnet._key("validator").ss58_address), windows)


def trainer_key():
    return localnet._key("metrics-trainer")


def make_trainer(net: Net, state_dir: Path, registry: CollectorRegistry | None, store: Path | None = None, **cfg):
    from adapters.storage import FileStore
    from trainer.service import Trainer, TrainerConfig
    from trainer.step import TrainConfig

    key = trainer_key()
    if net.chain.trainer_hotkey() != key.ss58_address:
        net.chain.set_trainer(key.ss58_address, net.chain.account_for(key).address)
    train = TrainConfig(**cfg.pop("train", {}))
    config = TrainerConfig(publish_every=1, heldout_problems=2, heldout_rollouts=1, train=train, **cfg)
    return Trainer(net.chain, key, net.lm, FileStore(store or net.root / "store"), state_dir, config,
                   validator=net.validator, registry=registry)


def run_windows(trainer, net: Net, n: int):
    from trainer.sources import ValidatorJournal

    source = ValidatorJournal(net.validator_dir, net.chain, net.validator[1])  # reports checked against the ledger
    return trainer.run(threading.Event(), source, max_windows=n, poll_s=0)


@pytest.fixture(scope="module")
def announced(net, tmp_path_factory):
    """A trainer that trained the first scored window and announced checkpoint v1."""
    registry = CollectorRegistry()
    state = tmp_path_factory.mktemp("trainer")
    with parity_registered():
        trainer = make_trainer(net, state, registry, gate_margin=1.0)
        (rec,) = run_windows(trainer, net, 1)
    pubs = trainer.journal.publications()
    assert rec.step and rec.step["applied"], rec  # the tiny model's parity rewards differ in some group
    assert [p["stage"] for p in pubs] == ["announced"], pubs
    return SimpleNamespace(registry=registry, state=state, trainer=trainer, window=rec.window, pub=pubs[0],
                           samples=scrape(registry))


def test_a_trained_window_and_an_announced_checkpoint_move_the_trainer_metrics(net, announced):
    s, trainer = announced.samples, announced.trainer
    journal = trainer.journal.windows()
    applied = [w for w in journal if w["step"] and w["step"]["applied"]]
    assert counted(s, "rollproof_trainer_windows_total", outcome="trained") == len(journal) == 1
    assert counted(s, "rollproof_trainer_steps_total", outcome="applied") == len(applied) == 1
    assert counted(s, "rollproof_trainer_rows_trained_total") == sum(w["rows"] for w in applied) > 0
    assert counted(s, "rollproof_trainer_rows_dropped_stale_total") == sum(w["dropped_stale"] for w in journal)
    assert value(s, "rollproof_trainer_step_seconds_count") == 1 and value(s, "rollproof_trainer_step_seconds_sum") > 0
    assert value(s, "rollproof_trainer_signal_rate") == journal[-1]["signal_rate"] > 0
    assert value(s, "rollproof_trainer_mean_reward") == pytest.approx(journal[-1]["mean_reward"])
    # the announced candidate: counted, its held-out rewards and size shown
    pub = announced.pub
    assert counted(s, "rollproof_trainer_checkpoints_total", stage="announced") == 1
    assert counted(s, "rollproof_trainer_checkpoints_total", stage="withheld") == 0
    assert value(s, "rollproof_trainer_checkpoint_version") == pub["version"] == 1
    assert value(s, "rollproof_trainer_heldout_reward", model="candidate") == pub["heldout"]
    assert value(s, "rollproof_trainer_heldout_reward", model="parent") == pub["parent_heldout"]
    assert value(s, "rollproof_trainer_heldout_reward", model="chance") == pub["chance"] > 0
    # greedy beside sampled: the gate's greedy accuracies of candidate and parent, and the base's
    # (here the parent: the base under its own params), measured once and shown
    assert value(s, "rollproof_trainer_heldout_greedy", model="candidate") == pub["greedy"]
    assert value(s, "rollproof_trainer_heldout_greedy", model="parent") == pub["parent_greedy"]
    base = trainer.base_greedy()
    assert value(s, "rollproof_trainer_heldout_greedy", model="base") == base.accuracy == pub["parent_greedy"]
    assert len(base.correct) == trainer.config.heldout_problems
    assert value(s, "rollproof_trainer_checkpoint_bytes") == pub["bytes"] > 0
    # the role's share of the node metrics
    assert value(s, "rollproof_checkpoint_version", role="trainer") == 1
    assert value(s, "rollproof_window", role="trainer") == announced.window
    assert value(s, "rollproof_chain_block", role="trainer") > 0
    from importlib.metadata import version

    assert value(s, "rollproof_build_info", role="trainer", version=version("rollproof"),
                 protocol=str(PROTOCOL_VERSION)) == 1


def test_a_restart_counts_only_what_is_new(net, announced, tmp_path):
    """A restarted trainer shows its journal's state in the gauges and counts nothing it counted
    before; what it decides after the restart (a candidate withheld, a built one expired) counts once."""
    from verification.constants import GREEDY_GATE_MIN_DROP

    second = CollectorRegistry()
    with parity_registered():
        trainer = make_trainer(net, announced.state, second, gate_margin=-1.0)  # every candidate is withheld
        s = scrape(second)
        for name in ("windows", "steps", "checkpoints"):
            assert not [k for k, v in s.items() if k[0] == f"rollproof_trainer_{name}_total" and v], s
        assert counted(s, "rollproof_trainer_rows_trained_total") == 0
        assert value(s, "rollproof_trainer_checkpoint_version") == 1
        assert value(s, "rollproof_trainer_checkpoint_bytes") == announced.pub["bytes"]
        assert value(s, "rollproof_trainer_heldout_reward", model="candidate") == announced.pub["heldout"]
        assert value(s, "rollproof_trainer_heldout_greedy", model="candidate") == announced.pub["greedy"]
        assert value(s, "rollproof_trainer_heldout_greedy", model="parent") == announced.pub["parent_greedy"]
        assert value(s, "rollproof_trainer_signal_rate") == value(announced.samples, "rollproof_trainer_signal_rate")
        assert value(s, "rollproof_checkpoint_version", role="trainer") == 1
        assert value(s, "rollproof_window", role="trainer") == announced.window
        assert run_windows(trainer, net, len(net.windows) - 1)  # the window left
        assert trainer.trained_windows == set(net.windows)
        s = scrape(second)
        assert counted(s, "rollproof_trainer_windows_total", outcome="trained") == len(net.windows) - 1
        assert trainer.journal.publication(2)["stage"] == "withheld", trainer.journal.publications()
        assert counted(s, "rollproof_trainer_checkpoints_total", stage="withheld") == 1
        assert counted(s, "rollproof_trainer_checkpoints_total", stage="announced") == 0
        assert value(s, "rollproof_trainer_checkpoint_version") == 2  # the newest candidate
        assert value(s, "rollproof_checkpoint_version", role="trainer") == 1  # the newest announced
        withheld = trainer.journal.publication(2)
        assert value(s, "rollproof_trainer_heldout_reward", model="candidate") == withheld["heldout"]
        assert value(s, "rollproof_trainer_heldout_greedy", model="candidate") == withheld["greedy"]
        # margin -1: the sampled measure fails and the note says so; the greedy one fails only on a drop
        # of GREEDY_GATE_MIN_DROP problems (2 of the 2 held-out problems here), and the note says so then
        assert "sampled held-out reward" in withheld["note"]
        dropped = round((withheld["parent_greedy"] - withheld["greedy"]) * 2)
        assert ("greedy held-out accuracy" in withheld["note"]) == (dropped >= GREEDY_GATE_MIN_DROP), withheld

        # a candidate journaled as built whose announcement never landed: expired by the next
        # restart, counted there, and by no later one
        trainer.journal.save_publication(9, {"version": 9, "stage": "built", "fingerprint": "cd" * 32})
        third, fourth = CollectorRegistry(), CollectorRegistry()
        make_trainer(net, announced.state, third)
        make_trainer(net, announced.state, fourth)
    assert counted(scrape(third), "rollproof_trainer_checkpoints_total", stage="expired") == 1
    assert counted(scrape(fourth), "rollproof_trainer_checkpoints_total", stage="expired") == 0
    assert value(scrape(fourth), "rollproof_trainer_checkpoint_version") == 9


def test_a_breaker_trip_and_an_unreadable_window_count_under_their_names(net, tmp_path):
    registry = CollectorRegistry()
    with parity_registered():
        # any gradient is "pathological" under this bound: the grad_norm breaker trips, nothing is applied
        trainer = make_trainer(net, tmp_path / "t", registry, train={"max_grad_norm_skip": 1e-12})
        (rec,) = run_windows(trainer, net, 1)
        assert rec.step and rec.step["reason"] == "grad_norm", rec
        not_trained = trainer.train_window(10 ** 6, b"not a report", lambda uid: None)
    assert not_trained.note.startswith("not trained")
    s = scrape(registry)
    assert counted(s, "rollproof_trainer_steps_total", outcome="grad_norm") == 1
    assert counted(s, "rollproof_trainer_steps_total", outcome="applied") == 0
    assert value(s, "rollproof_trainer_step_seconds_count") == 1  # a skipped step ran too
    assert counted(s, "rollproof_trainer_rows_trained_total") == 0
    assert counted(s, "rollproof_trainer_windows_total", outcome="trained") == 1
    assert counted(s, "rollproof_trainer_windows_total", outcome="not_trained") == 1
    assert value(s, "rollproof_window", role="trainer") == 10 ** 6
    assert not [k for k, v in s.items() if k[0] == "rollproof_trainer_checkpoints_total" and v]


def test_a_candidate_the_chain_refuses_is_counted_expired(net, tmp_path):
    """"checkpoint vN not announced" (the chain refused it): counted expired, shown as the newest
    candidate, the version in force unchanged."""
    registry = CollectorRegistry()
    with parity_registered():
        # its own store: its v1 is the announced v1's twin (same fingerprint), for another window
        trainer = make_trainer(net, tmp_path / "t", registry, tmp_path / "store", gate_margin=1.0)
        window = net.windows[0]
        assert trainer.train_window(window, *_scored(net, window)).step["applied"]
        stranger = localnet._key("metrics-stranger")
        net.chain.set_trainer(stranger.ss58_address, net.chain.account_for(stranger).address)
        try:
            pub = trainer.maybe_publish()
        finally:
            net.chain.set_trainer(trainer_key().ss58_address, net.chain.account_for(trainer_key()).address)
    assert pub.stage == "expired" and "could not publish" in pub.note
    s = scrape(registry)
    assert counted(s, "rollproof_trainer_checkpoints_total", stage="expired") == 1
    assert counted(s, "rollproof_trainer_checkpoints_total", stage="announced") == 0
    assert value(s, "rollproof_trainer_checkpoint_version") == pub.version
    assert value(s, "rollproof_trainer_checkpoint_bytes") == pub.bytes > 0
    assert value(s, "rollproof_checkpoint_version", role="trainer") == 0


def _scored(net: Net, window: int):
    from trainer.sources import ValidatorJournal

    return ValidatorJournal(net.validator_dir, net.chain, net.validator[1]).window(window)


def _announce_window(chain, after: int) -> int:
    """The next from_window after `after` that the registry takes now."""
    from verification.challenge import window_of_block, window_start_block

    landing = window_of_block(chain.current_block() + 1)
    window = max(after + 1, landing + ACTIVATION_WINDOWS)
    if window > landing + MAX_ANNOUNCE_AHEAD_WINDOWS:
        chain.mine(window_start_block(window - MAX_ANNOUNCE_AHEAD_WINDOWS) - 1 - chain.current_block())
    return window


def test_checkpoint_judgements_move_the_node_metrics(net, announced, tmp_path):
    """A validator's resolver judges what the trainer announced: valid once (replayed once, timed),
    invalid once (the verdict is kept), unavailable per failed attempt; the version in force
    follows the windows resolved, not the look-ahead."""
    from adapters.checkpoints import ModelResolver
    from adapters.fetch import Fetcher
    from trainer.replay_node import CheckpointReplayer
    from verification.checkpoint import manifest_hash
    from verification.errors import CheckpointUnavailableError

    chain, key = net.chain, trainer_key()
    (v1,) = [a for a in chain.checkpoint_announcements() if a.fingerprint.hex() == announced.pub["fingerprint"]]
    registry = CollectorRegistry()
    fetcher = Fetcher(file_roots=[net.root / "store"])
    replayer = CheckpointReplayer(chain, net.lm, fetcher, registry=registry, role="validator")
    resolver = ModelResolver(chain, net.lm, fetcher, replay=replayer, registry=registry, role="validator")
    with parity_registered():
        assert resolver.model_for(v1.from_window - 1) is net.lm
        assert value(scrape(registry), "rollproof_checkpoint_version", role="validator") == 0
        resolver.prepare(v1.from_window)  # judged ahead of its window: replayed now
        s = scrape(registry)
        assert counted(s, "rollproof_checkpoints_judged_total", role="validator", verdict="valid") == 1
        assert value(s, "rollproof_checkpoint_replay_seconds_count", role="validator") == 1
        assert value(s, "rollproof_checkpoint_replay_seconds_sum", role="validator") > 0
        assert value(s, "rollproof_checkpoint_version", role="validator") == 0  # still the base's window
        assert resolver.model_for(v1.from_window).fingerprint == v1.fingerprint
        assert value(scrape(registry), "rollproof_checkpoint_version", role="validator") == 1

        # v1's signed manifest announced under another fingerprint: void on every node
        manifest = fetcher.fetch(v1.location, max_bytes=MAX_MANIFEST_BYTES)
        forged = _announce_window(chain, v1.from_window)
        chain.announce_checkpoint(key, forged, b"\x07" * 32, manifest_hash(manifest), v1.location)
        # a manifest nobody can fetch: this node cannot judge it
        missing = _announce_window(chain, forged)
        chain.announce_checkpoint(key, missing, b"\x08" * 32, b"\x09" * 32, (tmp_path / "gone.json").as_uri())
        for _ in range(2):
            assert resolver.model_for(forged).fingerprint == v1.fingerprint  # the previous one stays in force
            with pytest.raises(CheckpointUnavailableError):
                resolver.model_for(missing)
    s = scrape(registry)
    assert counted(s, "rollproof_checkpoints_judged_total", role="validator", verdict="invalid") == 1
    assert counted(s, "rollproof_checkpoints_judged_total", role="validator", verdict="unavailable") == 2
    assert counted(s, "rollproof_checkpoints_judged_total", role="validator", verdict="valid") == 1
    assert value(s, "rollproof_checkpoint_replay_seconds_count", role="validator") == 1  # never replayed again
    assert value(s, "rollproof_checkpoint_version", role="validator") == 1  # a failed resolution moves nothing


@pytest.mark.replay  # torchrun: two processes loading torch and the model, a minute on 2 cores
def test_under_torchrun_only_rank_0_records(net, tmp_path):
    """Every rank runs the same windows and steps (DDP over the same rows); were each to record, a
    dashboard summing the ranks would count every step world-size times. Rank 0 records, the others
    record into a private registry. This file is the script each rank runs (main below)."""
    import os
    import subprocess
    import sys

    window = net.windows[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          __file__, str(net.validator_dir), str(window), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    exposed = {rank: scrape_text((tmp_path / f"rank{rank}.prom").read_text()) for rank in (0, 1)}
    assert counted(exposed[0], "rollproof_trainer_windows_total", outcome="trained") == 1
    assert counted(exposed[0], "rollproof_trainer_steps_total", outcome="applied") == 1
    assert counted(exposed[0], "rollproof_trainer_rows_trained_total") > 0
    assert value(exposed[0], "rollproof_window", role="trainer") == window
    assert not [k for k in exposed[1] if k[0].startswith("rollproof_")], exposed[1]


def scrape_text(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def main(journal: str, window: int, out_dir: str) -> None:
    """One torchrun rank: a trainer with the process's registry trains one scored window; the
    registry's exposition goes to out_dir/rank<r>.prom."""
    import torch
    from bittensor.sp_core import Keypair

    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from trainer.service import Trainer, TrainerConfig
    from trainer.sources import ValidatorJournal
    from verification.model import load_model

    torch.set_num_threads(1)
    registry = CollectorRegistry()
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        chain = EVMChain.embedded_chain(1)
        trainer = Trainer(chain, Keypair.create_from_uri("//t"), lm, FileStore(Path(out_dir) / "store"),
                          Path(out_dir) / "t", TrainerConfig(heldout_problems=2),
                          validator=(0, Keypair.create_from_uri("//v").ss58_address), registry=registry)
        assert trainer.world == 2
        rec = trainer.train_window(window, *ValidatorJournal(Path(journal), chain, None).window(window))
        assert rec.step is not None and rec.step["applied"], rec
    (Path(out_dir) / f"rank{trainer.rank}.prom").write_bytes(generate_latest(registry))


if __name__ == "__main__":
    import sys

    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
