"""The training record survives the trainer's restarts: the record in progress is part of the
trainer's atomic state write, so a trainer stopped and started again at any point between windows,
between a step and its candidate, or while publishing a candidate, announces checkpoints that
replay (trainer/replay.py). A candidate built but never announced is recorded as "expired" and
the replay accepts it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from replay_env import TRAINER_URI, make_journal, replay_store
from trainer_env import parity_registered
from verification.constants import REPLAY_REL_TOL

pytestmark = [pytest.mark.slow, pytest.mark.replay]  # a local network, then trainers and replays: minutes on 2 cores (README: the replay test command)
PUBLISH_EVERY = 2


class Killed(BaseException):
    """The trainer's process dying at this point (nothing of the trainer catches it)."""


class DyingChain:
    """The chain, but the process dies at the checkpoint announcement: before it lands
    (`lands=False`) or right after it landed."""

    def __init__(self, chain, *, lands: bool):
        self._chain, self._lands = chain, lands

    def __getattr__(self, name):
        return getattr(self._chain, name)

    def announce_checkpoint(self, *args, **kw):
        if self._lands:
            self._chain.announce_checkpoint(*args, **kw)
        raise Killed("killed at the announcement")


def _restart_and_finish(run, done: int) -> None:
    """A new trainer on the journal trains the rest (the windows after the first `done`): both
    checkpoints announce and replay, each on exactly publish_every steps."""
    t = run.trainer()
    for w in run.windows[done:]:
        run.train(t, w)
        t.maybe_publish(w)
    assert len(run.announced()) == 2, run.publications()
    for r in run.replay().values():
        assert r.steps == PUBLISH_EVERY, r.lines


@pytest.fixture(autouse=True)
def parity():
    with parity_registered():  # the checkpoints' generation params name the test environment
        yield


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    from verification.model import load_model

    root = tmp_path_factory.mktemp("restart")
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        journal = make_journal(lm, root / "net", windows=5)
    yield lm, journal
    shutil.rmtree(root, ignore_errors=True)


class Run:
    """One trainer's journal, store and chain; `trainer()` starts a Trainer on them (a restart when
    one ran before: the old object is simply dropped, as a killed process's memory is)."""

    def __init__(self, lm, journal, root: Path):
        from bittensor.sp_core import Keypair

        from adapters.chain.evm import EVMChain
        from adapters.storage import FileStore

        self.lm, self.journal, self.root = lm, journal, root
        self.chain = EVMChain.embedded_chain(1)
        self.key = Keypair.create_from_uri(TRAINER_URI)
        self.chain.set_trainer(self.key.ss58_address, self.chain.account_for(self.key).address)
        self.store = FileStore(root / "store")
        self.windows = sorted(int(p.name) for p in (journal.validator_dir / "windows").iterdir())

    def trainer(self, chain=None):
        from trainer.service import Trainer, TrainerConfig

        config = TrainerConfig(publish_every=PUBLISH_EVERY, heldout_problems=2, heldout_rollouts=2, gate_margin=1.0)
        return Trainer(chain or self.chain, self.key, self.lm, self.store, self.root / "trainer", config,
                       validator=self.journal.validator)

    def train(self, trainer, window: int):
        """Train one window from the validator's journal, its report checked against the ledger."""
        wdir = self.journal.validator_dir / "windows" / str(window)

        def bundle(uid: int) -> bytes | None:
            path = wdir / "bundles" / f"{uid}.rpb"
            return path.read_bytes() if path.is_file() else None

        entry = self.journal.ledger.ledger_entry(self.journal.validator[0], window)
        return trainer.train_window(window, (wdir / "report.json").read_bytes(), bundle, entry.report_hash)

    def until_due(self, trainer) -> int:
        """Train windows from the first until a candidate is due (publish_every applied steps);
        returns how many windows that took. Which windows give a step depends on the journal's
        rollouts (the local network's beacons follow its clock), so the tests never assume the first
        publish_every windows all do."""
        for done, w in enumerate(self.windows, 1):
            self.train(trainer, w)
            if trainer.steps_since_publish == PUBLISH_EVERY:
                return done
        raise AssertionError(f"no candidate came due in windows {self.windows}")

    def announced(self) -> list[str]:
        return [a.fingerprint.hex() for a in self.chain.checkpoint_announcements()]

    def publications(self) -> dict[int, str]:
        from trainer.journal import TrainerJournal

        return {p["version"]: p["stage"] for p in TrainerJournal(self.root / "trainer").publications()}

    def replay(self) -> dict:
        """Every announced checkpoint replayed on one process (parents first), fingerprint -> report."""
        reports = replay_store(self.lm, self.root / "store", self.journal.ledger, self.announced())
        assert sorted(reports) == sorted(self.announced())
        for r in reports.values():
            assert r.adapter_error <= REPLAY_REL_TOL and r.optimizer_error <= REPLAY_REL_TOL, r.lines
        return reports


@pytest.fixture(scope="module")
def uninterrupted(journal, tmp_path_factory):
    """The same windows trained by one trainer that never stops."""
    lm, j = journal
    run = Run(lm, j, tmp_path_factory.mktemp("uninterrupted"))
    with parity_registered():
        t = run.trainer()
        for w in run.windows:
            run.train(t, w)
            t.maybe_publish(w)
    assert len(run.announced()) == 2, run.publications()  # 5 windows with signal: v1 and v2
    return run.announced()


def test_restart_between_windows(journal, uninterrupted, tmp_path):
    """A new Trainer for every window: the same checkpoints as the uninterrupted trainer's, and
    each replays."""
    run = Run(*journal, tmp_path)
    for w in run.windows:
        t = run.trainer()
        run.train(t, w)
        t.maybe_publish(w)
    assert run.announced() == uninterrupted
    run.replay()


def test_killed_between_the_step_and_its_candidate(journal, tmp_path):
    """The process dies after the window that completes a span was journaled, before its candidate
    was built: the restarted trainer builds that candidate before training on, so the candidate
    still follows exactly publish_every applied steps, and it replays."""
    run = Run(*journal, tmp_path)
    t = run.trainer()
    done = run.until_due(t)  # the candidate is due now, but the process dies before maybe_publish
    _restart_and_finish(run, done)


def test_killed_before_the_announcement_lands_is_expired(journal, tmp_path):
    """The process dies after v1 was built and journaled as "built", before its announcement:
    the restarted trainer finds it not on chain and records it as expired; training goes on from
    its weights and v2 (whose record holds the expired candidate) replays."""
    from verification.training_record import TRAINING_FILE, CandidateEvent, parse_training_record

    run = Run(*journal, tmp_path)
    t = run.trainer(DyingChain(run.chain, lands=False))
    done = run.until_due(t)
    with pytest.raises(Killed):
        t.maybe_publish(run.windows[done - 1])
    assert run.publications() == {1: "built"} and run.announced() == []
    t = run.trainer()
    assert run.publications() == {1: "expired"}
    for w in run.windows[done:]:
        run.train(t, w)
        t.maybe_publish(w)
    assert run.publications() == {1: "expired", 2: "announced"}
    (fp,) = run.announced()
    record = parse_training_record((run.root / "store" / "rollproof" / "1" / "checkpoints" / fp / TRAINING_FILE)
                                   .read_bytes())
    stages = [(e.version, e.stage) for e in record.events if isinstance(e, CandidateEvent)]
    assert stages == [(1, "expired"), (2, "announced")], stages
    assert record.parent_version == 0
    (report,) = run.replay().values()
    assert report.steps == 2 * PUBLISH_EVERY
    assert any("candidate v1 expired" in line for line in report.lines), report.lines


def test_killed_after_the_announcement_landed(journal, uninterrupted, tmp_path):
    """The process dies after v1's announcement landed, before the trainer journaled it: the
    restarted trainer finds it on chain, takes it as the next parent, and both checkpoints are the
    uninterrupted trainer's and replay."""
    run = Run(*journal, tmp_path)
    t = run.trainer(DyingChain(run.chain, lands=True))
    done = run.until_due(t)
    with pytest.raises(Killed):
        t.maybe_publish(run.windows[done - 1])
    assert run.publications() == {1: "built"} and len(run.announced()) == 1
    t = run.trainer()
    assert run.publications() == {1: "announced"}
    for w in run.windows[done:]:
        run.train(t, w)
        t.maybe_publish(w)
    assert run.announced() == uninterrupted
    run.replay()


def test_killed_while_building_the_candidate(journal, tmp_path):
    """The process dies after the gate passed, while the candidate's files are being made (before
    it is journaled as built): the restarted trainer builds it again before training on, and the
    checkpoints replay."""
    run = Run(*journal, tmp_path)
    t = run.trainer()
    done = run.until_due(t)

    def killed(*args, **kw):
        raise Killed("killed while writing the record files")

    t._record_files = killed
    with pytest.raises(Killed):
        t.maybe_publish(run.windows[done - 1])
    assert run.publications() == {} and run.announced() == []
    _restart_and_finish(run, done)
