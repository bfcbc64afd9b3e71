"""`rollproof localnet`: the whole subnet on one machine with no network.

An embedded EVM (py-evm) runs the project's contracts; a local seeded drand signs beacons on the
chain's simulated clock; a directory is the bundle store; honest and cheating miners commit each
window; a validator scores them, records the ledger entry and sets weights on chain; the trainer
trains on the rows the validator accepted and announces checkpoints, which miners and validator
fetch, verify and switch to by window; finally every fetched bundle is re-verified offline the way
`rollproof verify` does and compared with the validator's verdict."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bittensor.sp_core import Keypair
from prometheus_client import CollectorRegistry

from miner.engines import Engine, HFEngine
from miner.service import Miner
from adapters.beacons import BeaconCache, LocalBeaconSource
from adapters.chain.evm import EVMChain
from adapters.checkpoints import ModelResolver
from adversary.cheaters import CopycatMiner, EditedTokensMiner, ModelSwapMiner, ReplayMiner, other_checkpoint
from adapters.fetch import Fetcher
from adapters.storage import FileStore
from adapters.windows import window_context
from adversary.dishonest_trainers import DISHONEST_TRAINERS
from rollproof.telemetry import localnet_page, replay_verdicts
from trainer.replay_node import CheckpointReplayer
from verification.constants import ACTIVATION_WINDOWS
from verification.errors import CheckpointError
from trainer.service import Publication, Trainer, TrainerConfig, WindowTraining
from validator.service import Validator, WindowResult
from verification.bundle import encode_bundle
from verification.challenge import window_of_block, window_start_block
from verification.drand_local import LocalDrand
from verification.model import LoadedModel
from verification.verifier import Expectation, Verifier

log = logging.getLogger("rollproof.localnet")
NETUID = 1


@dataclass
class Participant:
    name: str
    kind: str  # "honest" or the cheat
    miner: Miner


@dataclass
class LocalnetResult:
    windows: list[WindowResult] = field(default_factory=list)
    names: dict[int, tuple[str, str]] = field(default_factory=dict)  # uid -> (name, kind)
    chain_weights: dict[int, int] = field(default_factory=dict)
    ledger: list[dict] = field(default_factory=list)
    audits: list[dict] = field(default_factory=list)  # offline re-verification per fetched bundle
    problems: list[str] = field(default_factory=list)
    training: list[WindowTraining] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)
    published_at: dict[int, Publication] = field(default_factory=dict)  # window trained -> candidate made after it
    checkpoints: dict[int, str] = field(default_factory=dict)  # window -> fingerprint hex in force
    versions: dict[str, int] = field(default_factory=dict)  # fingerprint hex -> checkpoint version
    base_heldout: float = 0.0
    chance: float = 0.0
    base_greedy: float | None = None  # the base model's greedy accuracy on the gate's problems (base params)
    replays: dict[str, str] = field(default_factory=dict)  # fingerprint hex -> "replayed …" or why it is void

    @property
    def ok(self) -> bool:
        return not self.problems


def _key(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//rollproof-localnet/{name}")


def run_localnet(lm: LoadedModel, workdir: Path, *, windows: int = 2, n_groups: int | None = 2,
                 batch_size: int = 16, drand_seed: str | None = None, train: bool = True, cheaters: bool = True,
                 trainer_config: TrainerConfig | None = None, engine: Engine | None = None,
                 dishonest_trainer: str | None = None,
                 on_event: Callable[[str], None] | None = None,
                 on_window: Callable[[WindowResult, dict, dict], None] | None = None,
                 keep_going: Callable[[int], bool] | None = None,
                 registry: CollectorRegistry | None = None,
                 page: Callable[[Callable[[], bytes]], None] | None = None) -> LocalnetResult:
    """on_window(result, names, info): info has the window's checkpoint version and fingerprint, the
    trainer's record for it (signal rate, step) and any publication.

    n_groups: the groups per bundle of this network's base (`lm` under generation params with
    groups = n_groups, so every node agrees on it and the trainer's checkpoints carry it forward);
    None keeps lm's own. dishonest_trainer: a kind of adversary/dishonest_trainers.py (its every
    checkpoint must be voided by the nodes' replay; an honest trainer's must all replay). engine: the miners' generation engine, one shared by all of them (they run
    in turn; default the HF engine at batch_size).

    registry: the process's Prometheus registry every node records into (shared metrics by role,
    the miners' by uid); None: each keeps its own. page: called once with this network's status page
    (rollproof/telemetry.py localnet_page over `workdir`, with the nodes' replay verdicts) before the
    first window.

    keep_going(window): asked before every window after the first; False ends the run there (a time
    budget: scripts/learning.py stops starting windows the budget cannot fit)."""
    say = on_event or (lambda msg: log.info(msg))
    if n_groups is not None and n_groups != lm.generation.groups:
        lm = lm.with_generation(lm.generation.with_groups(n_groups))
    workdir = Path(workdir)
    chain = EVMChain.embedded_chain(NETUID)
    drand = LocalDrand(drand_seed) if drand_seed else LocalDrand()
    beacons = LocalBeaconSource(drand, clock=chain.now)
    cache = BeaconCache(workdir / "beacons")
    store = FileStore(workdir / "store")
    say(f"embedded chain: registry {chain.registry.address}, ledger {chain.ledger.address}, chain id {chain.chain_id}")
    say(f"local drand: {drand.info.chain_hash().hex()[:16]}… period {drand.period}s; store {store.root}")

    # one resolver for every participant: each checkpoint is fetched from the store and verified
    # (manifest hash, trainer signature, file hashes, fingerprint) once, as any node would
    # and replayed from its training record before it is used (docs/protocol.md section 16)
    # its verdicts count as the validator's: the miners read the same ones
    replayer = CheckpointReplayer(chain, lm, Fetcher(file_roots=[store.root]), on_line=lambda line: log.info(line),
                                  registry=registry, role="validator")
    resolver = ModelResolver(chain, lm, Fetcher(file_roots=[store.root]), replay=replayer, registry=registry,
                             role="validator")

    engine = engine if engine is not None else HFEngine(batch_size)

    def miner(cls, name, **kw):
        return cls(chain, _key(name), lm, store, beacons, workdir / "miners" / name,
                   beacon_cache=cache, resolver=resolver, engine=engine, registry=registry, **kw)

    honest = [Participant(f"honest-{i}", "honest", miner(Miner, f"honest-{i}")) for i in (1, 2)]
    participants = list(honest)
    if cheaters:
        participants += [
            Participant("swapper", "model swap", miner(ModelSwapMiner, "swapper", swapped=other_checkpoint(lm))),
            Participant("editor", "edited tokens", miner(EditedTokensMiner, "editor")),
            Participant("copycat", "copycat", miner(CopycatMiner, "copycat", victim=honest[0].miner.hotkey)),
        ]
    replay_key = _key("replayer")

    validator_key = _key("validator")
    trainer_key = _key("trainer")
    for p in participants:
        chain.register(p.miner.keypair)
    if cheaters:
        chain.register(replay_key)
    vuid = chain.register(validator_key)
    chain.set_validator_permit(vuid)
    trainer = None
    if train:
        chain.set_trainer(trainer_key.ss58_address, chain.account_for(trainer_key).address)
        trainer_cls = DISHONEST_TRAINERS[dishonest_trainer] if dishonest_trainer else Trainer
        trainer = trainer_cls(chain, trainer_key, lm, store, workdir / "trainer", trainer_config,
                              validator=(vuid, validator_key.ss58_address), registry=registry)
        say(f"{'dishonest (' + dishonest_trainer + ') ' if dishonest_trainer else ''}"
            f"trainer {trainer_key.ss58_address[:12]}…: LoRA rank {trainer.config.lora.rank}, "
            f"held-out set of {trainer.config.heldout_problems} problems")

    # the replayer's one honest bundle, made for the window before the first one it will replay into
    first = window_of_block(chain.current_block()) + 2
    chain.mine(max(0, window_start_block(first - 1) - chain.current_block()))
    if cheaters:
        old_ctx = window_context(chain, beacons, first - 1, cache)
        old = Miner(chain, replay_key, lm, store, beacons, workdir / "miners" / "replayer-old",
                    engine=engine).make_bundle(old_ctx)
        participants.append(Participant("replayer", "replay",
                                         miner(ReplayMiner, "replayer", old_bundle=encode_bundle(old))))

    result = LocalnetResult()
    for p in participants:
        result.names[chain.uid_of(p.miner.hotkey)] = (p.name, p.kind)
    result.names[vuid] = ("validator", "validator")
    validator = Validator(chain, validator_key, lm, beacons, Fetcher(file_roots=[store.root]),
                          workdir / "validator", beacon_cache=cache, batch_size=8, resolver=resolver,
                          registry=registry)
    if page is not None:
        page(localnet_page(workdir, replays=lambda: replay_verdicts(replayer, resolver)))
    result.versions[lm.fingerprint.hex()] = 0
    if trainer is not None:
        base = trainer.heldout(lm)
        result.base_heldout, result.chance = base.mean, base.chance
        result.base_greedy = trainer.base_greedy().accuracy
        say(f"held-out reward of the base model {base.mean:.3f} sampled, {result.base_greedy:.3f} greedy "
            f"(chance baseline {base.chance:.3f})")

    for window in range(first, first + windows):
        if keep_going is not None and result.windows and not keep_going(window):
            say(f"window {window}: not started (keep_going said stop)")
            break
        chain.mine(max(0, window_start_block(window) - chain.current_block()))
        say(f"window {window}: blocks {window_start_block(window)}..{window_start_block(window + 1) - 1}")
        for p in participants:
            rec = p.miner.run_window(window)
            say(f"  {p.name:<10} {rec.stage:<9} {rec.n_groups} groups, {rec.n_tokens} tokens")
        while not validator.ready(window):
            chain.mine(1)
        res = validator.process_window(window)
        result.windows.append(res)
        fp = res.report.get("model_fingerprint", "")
        result.checkpoints[window] = fp
        info = {"window": window, "fingerprint": fp, "version": result.versions.get(fp), "training": None,
                "publication": None}
        if res.checkpoint_error:
            result.problems.append(f"window {window}: the validator could not verify the checkpoint: "
                                   f"{res.checkpoint_error}")
        elif trainer is not None:
            ledger = chain.ledger_entry(vuid, window)
            rec = trainer.train_window(window, validator.state.report_path(window).read_bytes(),
                                       _bundle_reader(validator, window),
                                       ledger.report_hash if ledger else None)
            result.training.append(rec)
            info["training"] = rec
            pub = trainer.maybe_publish(window_of_block(chain.current_block()))
            if pub is not None:
                result.publications.append(pub)
                result.published_at[window] = pub
                info["publication"] = pub
                if pub.stage == "announced":
                    result.versions[pub.fingerprint] = pub.version
        resolver.prepare(window + ACTIVATION_WINDOWS)  # nodes replay a checkpoint before its first window
        if on_window:
            on_window(res, result.names, info)
        _check_window(res, result)

    for ann in chain.checkpoint_announcements():  # the ones announced for windows after the run, too
        try:
            resolver.judge(ann)
        except CheckpointError as exc:
            result.problems.append(f"checkpoint {ann.fingerprint.hex()[:16]}…: could not be judged: {exc}")
    result.replays = replay_verdicts(replayer, resolver)
    for pub in result.publications:
        verdict = result.replays.get(pub.fingerprint, "not judged")
        if pub.stage == "announced" and verdict.startswith("replayed") == bool(dishonest_trainer):
            result.problems.append(f"checkpoint v{pub.version} of the {dishonest_trainer or 'honest'} trainer: {verdict}")
    (workdir / "ledger.jsonl").write_text("".join(json.dumps(ledger_json(e)) + "\n" for e in chain.ledger_events()))
    result.chain_weights = chain.weights(vuid)
    result.ledger = chain.ledger_events()
    last = result.windows[-1]
    if not result.ledger or result.ledger[-1]["report_hash"] != last.report_hash:
        result.problems.append("the chain's last ledger entry does not match the validator's report")
    expected_weights = {m["uid"]: m["weight"] for m in last.report["miners"]}
    if result.chain_weights != expected_weights:
        result.problems.append("the chain's weights differ from the validator's report")
    result.audits = _audit(validator.model_for(last.window), drand, validator, last)
    for a in result.audits:
        if a["agrees"] is False:
            result.problems.append(f"offline verification of uid {a['uid']} disagrees with the validator")
    return result


def ledger_json(event: dict) -> dict:
    """A ledger entry as one JSON object (what `rollproof verify-checkpoint --ledger-file` reads)."""
    return {"validator_uid": int(event["validator_uid"]), "window": int(event["window"]),
            "uids": [int(u) for u in event["uids"]], "scores": [int(x) for x in event["scores"]],
            "verified_root": bytes(event["verified_root"]).hex(), "report_hash": bytes(event["report_hash"]).hex(),
            "block": int(event["block"])}


def _bundle_reader(validator: Validator, window: int):
    def read(uid: int) -> bytes | None:
        path = validator.state.bundle_path(window, uid)
        return path.read_bytes() if path.is_file() else None

    return read


def _check_window(res: WindowResult, result: LocalnetResult) -> None:
    for m in res.report.get("miners", []):
        name, kind = result.names.get(m["uid"], ("?", "?"))
        if kind == "honest" and m["weight"] == 0:
            result.problems.append(f"window {res.window}: honest {name} got zero ({m['reason']})")
        if kind not in ("honest", "validator") and m["weight"] != 0:
            result.problems.append(f"window {res.window}: cheater {name} got weight {m['weight']}")


def _audit(lm: LoadedModel, drand: LocalDrand, validator: Validator, res: WindowResult) -> list[dict]:
    """Re-verify every bundle the validator fetched in the last window from its bytes alone, on
    the groups the validator checked, and compare verdicts."""
    verifier = Verifier(lm, [drand.info])
    out = []
    for m in res.report["miners"]:
        path = validator.state.bundle_path(res.window, m["uid"])
        if not path.is_file():
            out.append({"uid": m["uid"], "validator": m["reason"], "offline": "(no bundle fetched)", "agrees": None})
            continue
        data = path.read_bytes()
        expected = Expectation(netuid=res.report["netuid"], window=res.window, hotkey=m["hotkey"],
                               block_hash=bytes.fromhex(res.report["block_hash"]),
                               block_time=res.report["block_time"])
        verdict = verifier.verify_bytes(data, expected, groups=m["checked_groups"] or None)
        out.append({"uid": m["uid"], "validator": m["verdict"], "offline": verdict.reason,
                    "agrees": verdict.reason == m["verdict"]})
    return out
