"""No announcement can stop the subnet (issue 24, item 1; docs/protocol.md section 15).

* The registry refuses a from_window more than MAX_ANNOUNCE_AHEAD_WINDOWS ahead (2**64 - 1 too),
  and the client refuses it before sending; one at the bound lands.
* The registry's admin voids an announcement (nobody else can); a void applies ACTIVATION_WINDOWS
  after it lands, and the trainer announces again after the last announcement not voided.
* A checkpoint nobody can fetch is each node's own skip (CheckpointUnavailableError), and the
  subnet runs again once it is voided or superseded.
* A checkpoint whose bytes bound on chain fail a check (another signer, a weights root that the
  adapter does not give) is void on every node: the previous valid checkpoint stays in force,
  recursively down to the base model, for a miner's and a validator's resolver alike; the verdict
  is kept, never refetched.
* The same rule on the subtensor-commitment path, and the CLI's `chain announcements` / `chain void`.
Checkpoints are real: built once from the tiny model's LoRA policy, signed by the trainer's key."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.checkpoints import ModelResolver
from adapters.fetch import Fetcher
from verification.announcement import encode_announcement, valid_on_subtensor
from verification.challenge import window_of_block
from verification.checkpoint import Announcement, checkpoint_candidates, checkpoint_for, manifest_hash
from verification.constants import ACTIVATION_WINDOWS, MAX_ANNOUNCE_AHEAD_WINDOWS, WINDOW_BLOCKS
from verification.errors import ChainError, ChainRefusedError, CheckpointUnavailableError

NETUID = 1
ADMIN_KEY = "0x" + "00" * 31 + "01"  # the embedded chain's first account, which deploys (the admin)


# ---- real checkpoints, stored under a short root (subtensor announcements carry <= 75 bytes) -------
@pytest.fixture(scope="module")
def built(tiny, alice):
    from trainer.checkpointing import build_checkpoint
    from trainer.policy import LoraSettings, make_policy

    policy = make_policy(tiny, LoraSettings(rank=2, alpha=4.0))
    return build_checkpoint(tiny, policy, keypair=alice, netuid=NETUID, version=1, from_window=0,
                            parent_fingerprint=tiny.fingerprint, params=tiny.generation)


@pytest.fixture()
def root():
    path = Path(tempfile.mkdtemp(prefix="rp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def signed(manifest, key, **changes):
    from verification.signing import sign

    body = replace(manifest, **changes, signature="")
    return replace(body, signature=sign(key, body.signing_message()).hex())


def put(root: Path, name: str, manifest, files) -> str:
    """Manifest and files in their own directory; returns the manifest's URI."""
    d = root / name
    d.mkdir()
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    (d / "m.json").write_bytes(manifest.to_bytes())
    return (d / "m.json").as_uri()


def announce(chain, key, manifest, location: str) -> None:
    chain.announce_checkpoint(key, manifest.from_window, bytes.fromhex(manifest.fingerprint),
                              manifest_hash(manifest.to_bytes()), location)


def resolvers(chain, base, root):
    """A miner's and a validator's resolver: separate instances, separate fetchers."""
    return ModelResolver(chain, base, Fetcher(file_roots=[root])), ModelResolver(chain, base, Fetcher(file_roots=[root]))


# ---- the embedded EVM chain ----------------------------------------------------------------------
def trainer_chain(alice):
    from adapters.chain.evm import EVMChain

    chain = EVMChain.embedded_chain(NETUID)
    chain.set_trainer(alice.ss58_address, chain.account_for(alice).address)
    return chain


def window_start(chain) -> int:
    """Mine to the first block of the next window; returns it (the next 19 transactions land in it)."""
    chain.mine(WINDOW_BLOCKS - chain.current_block() % WINDOW_BLOCKS)
    assert chain.current_block() % WINDOW_BLOCKS == 0
    return window_of_block(chain.current_block())


FP, MH = b"\x01" * 32, b"\x02" * 32


def test_far_ahead_announcements_are_refused_by_the_registry_and_the_client(alice):
    chain = trainer_chain(alice)
    now = window_start(chain)

    def raw(from_window):  # the contract itself, without the client's check
        chain._transact(chain.account_for(alice),
                        chain.registry.functions.announce_checkpoint(from_window, FP, MH, b"file:///x"), "raw")

    for w in (2**64 - 1, now + MAX_ANNOUNCE_AHEAD_WINDOWS + 1):
        with pytest.raises(ChainRefusedError, match="announcement too far ahead"):
            raw(w)
        head = chain.current_block()
        with pytest.raises(ChainRefusedError, match="MAX_ANNOUNCE_AHEAD_WINDOWS"):
            chain.announce_checkpoint(alice, w, FP, MH, "file:///x")
        assert chain.current_block() == head  # refused before sending: no transaction
    with pytest.raises(ChainRefusedError, match="MAX_ANNOUNCE_AHEAD_WINDOWS"):
        chain.announce_checkpoint(alice, 2**64, FP, MH, "file:///x")
    with pytest.raises(ChainError, match="past window"):
        chain.announce_checkpoint(alice, now + ACTIVATION_WINDOWS - 1, FP, MH, "file:///x")
    assert chain.checkpoint_announcements() == []
    chain.announce_checkpoint(alice, now + MAX_ANNOUNCE_AHEAD_WINDOWS, FP, MH, "file:///x")  # at the bound
    (ann,) = chain.checkpoint_announcements()
    assert ann.from_window == now + MAX_ANNOUNCE_AHEAD_WINDOWS and ann.valid and ann.voided_block == 0


def test_the_admin_voids_and_the_trainer_announces_again(alice):
    from eth_account import Account

    chain = trainer_chain(alice)
    now = window_start(chain)
    chain.announce_checkpoint(alice, now + MAX_ANNOUNCE_AHEAD_WINDOWS, FP, MH, "file:///x")
    with pytest.raises(ChainError, match="not after the last announcement"):
        chain.announce_checkpoint(alice, now + 3, b"\x03" * 32, MH, "file:///y")
    for stranger in (chain.account_for(alice), Account.from_key("0x" + "22" * 32)):  # the trainer is no admin
        chain.embedded.fund(stranger.address)
        with pytest.raises(ChainRefusedError, match="admin only"):
            chain.void_announcement(0, admin=stranger)
    with pytest.raises(ChainRefusedError, match="no such announcement"):
        chain.void_announcement(1, admin=Account.from_key(ADMIN_KEY))
    assert chain.checkpoint_announcements()[0].voided_block == 0
    chain.void_announcement(0, admin=Account.from_key(ADMIN_KEY))
    with pytest.raises(ChainRefusedError, match="already voided"):
        chain.void_announcement(0)
    chain.announce_checkpoint(alice, now + 3, b"\x03" * 32, MH, "file:///y")  # after the last one not voided
    first, second = chain.checkpoint_announcements()
    assert window_of_block(first.voided_block) == now and second.voided_block == 0
    # the void applies from ACTIVATION_WINDOWS after it landed: the voided one is never in force
    for w in range(now, now + 12):
        assert checkpoint_for(w, [first, second]) == (second if w >= now + 3 else None)
    # voiding the newest too: the next announcement follows the last one not voided (none left)
    chain.void_announcement(1)
    chain.announce_checkpoint(alice, now + ACTIVATION_WINDOWS, b"\x04" * 32, MH, "file:///z")
    # a void in the middle of the list: the one after it still bounds the next announcement
    chain.announce_checkpoint(alice, now + 4, b"\x05" * 32, MH, "file:///z")
    chain.void_announcement(2)
    with pytest.raises(ChainError, match="not after the last announcement"):
        chain.announce_checkpoint(alice, now + 4, b"\x06" * 32, MH, "file:///z")
    chain.announce_checkpoint(alice, now + 5, b"\x06" * 32, MH, "file:///z")
    assert [a.voided_block > 0 for a in chain.checkpoint_announcements()] == [True, True, True, False, False]


def test_an_unfetchable_checkpoint_is_each_nodes_skip_until_voided_or_superseded(tiny, alice, built, root):
    chain = trainer_chain(alice)
    now = window_start(chain)
    a = signed(built.manifest, alice, from_window=now + 2)
    announce(chain, alice, a, put(root, "a", a, built.files))
    gone = signed(built.manifest, alice, from_window=now + 3)
    announce(chain, alice, gone, (root / "nowhere" / "m.json").as_uri())  # nobody can fetch it
    nodes = resolvers(chain, tiny, root)
    for node in nodes:
        assert node.model_for(now + 1) is tiny
        assert node.model_for(now + 2).fingerprint.hex() == a.fingerprint
        for w in (now + 3, now + 40):  # no verdict: every later window is skipped by this node
            with pytest.raises(CheckpointUnavailableError, match="cannot fetch the manifest"):
                node.model_for(w)
    chain.void_announcement(1)  # lands in window `now`: applies from now + 2, before now + 3
    for node in nodes:
        assert [node.model_for(w).fingerprint.hex() for w in (now + 3, now + 40)] == [a.fingerprint] * 2
    # superseded: another unfetchable one, then a fetchable one for the next window
    chain.announce_checkpoint(alice, now + 4, FP, MH, (root / "nowhere2" / "m.json").as_uri())
    b = signed(built.manifest, alice, from_window=now + 5)
    announce(chain, alice, b, put(root, "b", b, built.files))
    for node in nodes:
        with pytest.raises(CheckpointUnavailableError):
            node.model_for(now + 4)
        assert node.model_for(now + 5).fingerprint.hex() == b.fingerprint
        assert node.invalid_verdicts() == {}  # unavailability is never a verdict on the announcement


def test_an_invalid_checkpoint_leaves_the_previous_in_force_on_every_node(tiny, alice, bob, built, root):
    chain = trainer_chain(alice)
    now = window_start(chain)
    a = signed(built.manifest, alice, from_window=now + 2)
    announce(chain, alice, a, put(root, "a", a, built.files))
    by_bob = signed(built.manifest, bob, from_window=now + 3, trainer_hotkey=bob.ss58_address)
    announce(chain, alice, by_bob, put(root, "b", by_bob, built.files))
    wrong_root = signed(built.manifest, alice, from_window=now + 4, weights_root="ab" * 32)
    announce(chain, alice, wrong_root, put(root, "c", wrong_root, built.files))
    miner, validator = resolvers(chain, tiny, root)
    # the validator asks for the last window first, the miner for each in turn: the same answers
    assert validator.model_for(now + 4).fingerprint.hex() == a.fingerprint  # c invalid -> b invalid -> a
    for w in range(now + 2, now + 8):
        assert miner.model_for(w).fingerprint == validator.model_for(w).fingerprint
        assert miner.model_for(w).fingerprint.hex() == a.fingerprint
    for node in (miner, validator):
        reasons = sorted(node.invalid_verdicts().values())
        assert len(reasons) == 2
        assert "the chain's trainer is" in reasons[0] and "weights root" in reasons[1], reasons
    # verdicts are kept: with the invalid checkpoints' bytes gone, nothing changes (nothing refetched)
    shutil.rmtree(root / "b")
    shutil.rmtree(root / "c")
    assert validator.model_for(now + 9).fingerprint.hex() == a.fingerprint
    # every candidate invalid: the base model
    chain2 = trainer_chain(alice)
    now2 = window_start(chain2)
    bad = signed(built.manifest, bob, from_window=now2 + 2, trainer_hotkey=bob.ss58_address)
    announce(chain2, alice, bad, put(root, "d", bad, built.files))
    assert all(node.model_for(now2 + 2) is tiny for node in resolvers(chain2, tiny, root))


def test_a_verdict_does_not_change_when_the_admin_names_another_trainer(tiny, alice, bob, built, root):
    """The registry binds the trainer hotkey to each announcement: alice's checkpoint stays valid
    after the admin names bob, and bob's announcements need bob's signature."""
    chain = trainer_chain(alice)
    now = window_start(chain)
    a = signed(built.manifest, alice, from_window=now + 2)
    announce(chain, alice, a, put(root, "a", a, built.files))
    chain.set_trainer(bob.ss58_address, chain.account_for(bob).address)
    by_alice = signed(built.manifest, alice, from_window=now + 3)  # sent by bob's account, alice's signature
    announce(chain, bob, by_alice, put(root, "b", by_alice, built.files))
    first, second = chain.checkpoint_announcements()
    assert (first.signer, second.signer) == (alice.ss58_address, bob.ss58_address)
    node = ModelResolver(chain, tiny, Fetcher(file_roots=[root]))
    assert node.model_for(now + 3).fingerprint.hex() == a.fingerprint  # the second is void, the first stays
    assert [k[1] for k in node.invalid_verdicts()] == [bob.ss58_address]


def test_bytes_that_differ_from_their_hash_are_unavailable_not_invalid(tiny, alice, built, root):
    chain = trainer_chain(alice)
    now = window_start(chain)
    a = signed(built.manifest, alice, from_window=now + 2)
    location = put(root, "a", a, built.files)
    announce(chain, alice, a, location)
    adapter = root / "a" / "adapter.safetensors"
    data = adapter.read_bytes()
    adapter.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the store serves other bytes
    node = ModelResolver(chain, tiny, Fetcher(file_roots=[root]))
    with pytest.raises(CheckpointUnavailableError, match="SHA-256"):
        node.model_for(now + 2)
    (root / "a" / "m.json").write_bytes(a.to_bytes() + b" ")
    with pytest.raises(CheckpointUnavailableError, match="does not hash to the announced manifest hash"):
        node.model_for(now + 2)
    assert node.invalid_verdicts() == {}
    (root / "a" / "m.json").write_bytes(a.to_bytes())
    adapter.write_bytes(built.files["adapter.safetensors"])
    assert node.model_for(now + 2).fingerprint.hex() == a.fingerprint


def test_miner_and_validator_skip_an_unfetchable_checkpoint_and_run_again_once_it_is_voided(
        tmp_path, tiny, local_drand, alice, bob, built, root, caplog):
    """The real services: each node skips (and logs) the windows of a checkpoint nobody can fetch,
    and both run again, on the same model, from ACTIVATION_WINDOWS after the admin voids it; an
    invalid checkpoint announced next changes nothing for either."""
    from bittensor.sp_core import Keypair

    from miner.service import Miner
    from test_miner_validator import Net

    miner_key, vkey = (Keypair.create_from_uri(f"//halt/{n}") for n in ("miner", "validator"))
    net = Net(tmp_path, tiny, local_drand, [miner_key, vkey])
    net.chain.set_trainer(alice.ss58_address, net.chain.account_for(alice).address)
    w = net.next_window()
    net.chain.announce_checkpoint(alice, w + ACTIVATION_WINDOWS, FP, MH, (root / "nowhere" / "m.json").as_uri())
    miner = Miner(net.chain, miner_key, tiny, net.store, net.beacons, tmp_path / "m",
                  resolver=ModelResolver(net.chain, tiny, Fetcher(file_roots=[root])))
    validator = net.validator(vkey, resolver=ModelResolver(net.chain, tiny, Fetcher(file_roots=[root])))

    skipped = net.next_window()
    assert skipped == w + 1
    skipped = net.next_window()  # the unfetchable checkpoint's first window
    rec = miner.run_window(skipped)
    assert rec.stage == "missed" and "cannot fetch the manifest" in rec.detail
    net.open(validator, skipped)
    res = validator.process_window(skipped)
    assert "cannot fetch the manifest" in res.checkpoint_error and not res.wrote_weights
    assert validator.state.stage(skipped) == "checkpoint_failed"
    assert any("cannot fetch the manifest" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    net.chain.void_announcement(0)
    applies = window_of_block(net.chain.checkpoint_announcements()[0].voided_block) + ACTIVATION_WINDOWS
    bad = signed(built.manifest, bob, from_window=applies, trainer_hotkey=bob.ss58_address)
    announce(net.chain, alice, bad, put(root, "bad", bad, built.files))  # invalid: void by rule
    window = net.next_window()
    while window < applies:  # decided before the void applies: still skipped
        assert miner.run_window(window).stage == "missed"
        window = net.next_window()
    assert window == applies  # the unfetchable one voided, the invalid one void: the base model
    assert miner.run_window(window).stage == "committed"
    net.open(validator, window)
    res = validator.process_window(window)
    (m,) = res.report["miners"]
    assert m["reason"] == "ok" and m["weight"] == 65535 and res.wrote_weights, m
    assert len(validator.resolver.invalid_verdicts()) == len(miner.resolver.invalid_verdicts()) == 1


# ---- the subtensor-commitment path -----------------------------------------------------------------
class CommitmentReads:
    """Subtensor's reads for the announcer's commitments: CommitmentOf answers as the state of the
    block asked for does (the latest commitment landed at or before it), like tests/subtensor_reads.py
    for the other items."""

    def __init__(self, head: int):
        self.block = self.finalized_block = head
        self.landed: dict[str, list[tuple[int, bytes]]] = {}

    def commit(self, hotkey: str, block: int, data: bytes) -> None:
        self.landed.setdefault(hotkey, []).append((block, data))

    def query(self, item, params=None, block=None):
        from adapters.chain.bittensor_chain import commitment_fields

        if item.name != "CommitmentOf":
            return None
        rows = [r for r in self.landed.get(params[1], []) if r[0] <= block]
        return {"block": rows[-1][0], "info": {"fields": commitment_fields(rows[-1][1])}} if rows else None


def test_the_rule_on_the_subtensor_commitment_path(tiny, alice, bob, built, root):
    from adapters.chain.bittensor_chain import BittensorChain

    v = 10  # announcements land in windows v, v + 1, ...; each applies ACTIVATION_WINDOWS later
    reads = CommitmentReads(head=(v + 12) * WINDOW_BLOCKS)
    chain = BittensorChain("finney", NETUID, subtensor=reads, wallet=SimpleNamespace(), announcer=alice.ss58_address)

    def commit(landed_window: int, manifest, location: str) -> None:
        data = encode_announcement(NETUID, manifest.from_window, bytes.fromhex(manifest.fingerprint),
                                   manifest_hash(manifest.to_bytes()), location)
        block = landed_window * WINDOW_BLOCKS + 3
        assert valid_on_subtensor(manifest.from_window, block)
        reads.commit(alice.ss58_address, block, data)

    def at(w):
        return w + ACTIVATION_WINDOWS

    try:
        a = signed(built.manifest, alice, from_window=at(v))
        commit(v, a, put(root, "a", a, built.files))
        by_bob = signed(built.manifest, bob, from_window=at(v + 1), trainer_hotkey=bob.ss58_address)
        commit(v + 1, by_bob, put(root, "b", by_bob, built.files))
        gone = signed(built.manifest, alice, from_window=at(v + 2))
        commit(v + 2, gone, (root / "gone" / "m.json").as_uri())
        # voiding on subtensor is superseding: the announcer's next announcement
        d = signed(built.manifest, alice, from_window=at(v + 3))
        commit(v + 3, d, put(root, "d", d, built.files))
        miner, validator = resolvers(chain, tiny, root)
        for node in (validator, miner):
            assert node.model_for(at(v) - 1) is tiny
            assert node.model_for(at(v)).fingerprint.hex() == a.fingerprint
            assert node.model_for(at(v + 1)).fingerprint.hex() == a.fingerprint  # bob's: void, a stays
            with pytest.raises(CheckpointUnavailableError, match="cannot fetch"):
                node.model_for(at(v + 2))  # this node's skip
            assert node.model_for(at(v + 3)).fingerprint.hex() == d.fingerprint
            assert [k[0][0] for k in node.invalid_verdicts()] == [at(v + 1)]
        # an announcement naming a window further ahead than ACTIVATION_WINDOWS is never valid there
        far = signed(built.manifest, alice, from_window=2**64 - 1)
        reads.commit(alice.ss58_address, (v + 4) * WINDOW_BLOCKS + 3,
                     encode_announcement(NETUID, far.from_window, bytes.fromhex(far.fingerprint),
                                         manifest_hash(far.to_bytes()), "file:///x"))
        assert validator.model_for(at(v + 4)).fingerprint.hex() == d.fingerprint
    finally:
        chain.close()


# ---- the rule itself (pure) --------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 3 * WINDOW_BLOCKS - 1))
def test_subtensor_announcements_are_within_the_bound(landed_window, offset):
    block = landed_window * WINDOW_BLOCKS + offset % WINDOW_BLOCKS
    for ahead in range(0, MAX_ANNOUNCE_AHEAD_WINDOWS + 3):
        ann = Announcement(window_of_block(block) + ahead, FP, MH, "file:///x", block)
        assert ann.valid == (ACTIVATION_WINDOWS <= ahead <= MAX_ANNOUNCE_AHEAD_WINDOWS)
        if valid_on_subtensor(ann.from_window, block):
            assert ann.valid


announcement_lists = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, MAX_ANNOUNCE_AHEAD_WINDOWS + 1), st.integers(0, 3),
              st.one_of(st.just(None), st.integers(0, 12))),
    max_size=8)


def _build(rows):
    """(landed window, windows ahead, tag, voided in window or None) -> announcements."""
    out = []
    for i, (landed, ahead, tag, voided) in enumerate(rows):
        block = landed * WINDOW_BLOCKS + i
        vblock = 0 if voided is None else max(voided * WINDOW_BLOCKS, block + 1)
        out.append(Announcement(landed + ahead, bytes([tag]) * 32, bytes([i]) * 32, "file:///x", block, vblock))
    return out


@settings(max_examples=300, deadline=None)
@given(announcement_lists, st.sets(st.integers(0, 7)))
def test_the_window_rule_skips_exactly_the_invalid_and_voided(rows, invalid_idx):
    anns = _build(rows)
    invalid = {anns[i].verdict_key for i in invalid_idx if i < len(anns)}
    for w in range(0, 25):
        got = checkpoint_for(w, anns, invalid)
        candidates = checkpoint_candidates(w, anns)
        # the first candidate not invalid; a candidate is valid, not voided for w, already from_window
        assert got == next((a for a in candidates if a.verdict_key not in invalid), None)
        for a in candidates:
            assert a.valid and a.from_window <= w and not a.voided_for(w)
        assert [(a.from_window, a.block) for a in candidates] == sorted(
            [(a.from_window, a.block) for a in candidates], reverse=True)
        # a void never changes a window decided before it applies
        if all(not a.voided_for(w) for a in anns):
            unvoided = checkpoint_for(w, [replace(a, voided_block=0) for a in anns], invalid)
            assert _key(got) == _key(unvoided)


def _key(a):
    return None if a is None else (a.from_window, a.block, a.manifest_hash)


# ---- the CLI ------------------------------------------------------------------------------------------
def test_cli_lists_and_voids_announcements(alice):
    import json

    from eth_account import Account
    from typer.testing import CliRunner

    from adapters.chain.evm import EVMChain, EmbeddedEVM
    from rollproof.cli import app
    from rpc_server import EmbeddedRPCServer

    server = EmbeddedRPCServer(EmbeddedEVM()).start()
    try:
        with server.lock:
            registry, ledger = EVMChain.deploy(server.evm.w3, server.evm.admin, NETUID)
            trainer_key = "0x" + "33" * 32
            server.evm.fund(Account.from_key(trainer_key).address)
        chain = EVMChain.connect(server.url, registry, ledger)
        address = chain.add_evm_key(alice.ss58_address, trainer_key)
        chain.set_trainer(alice.ss58_address, address, admin=Account.from_key(ADMIN_KEY))
        now = window_of_block(chain.current_block() + 1)
        chain.announce_checkpoint(alice, now + MAX_ANNOUNCE_AHEAD_WINDOWS, FP, MH, "file:///x")
        where = ["--rpc-url", server.url, "--registry", registry, "--ledger", ledger]
        runner = CliRunner()
        listed = runner.invoke(app, ["chain", "announcements", *where])
        assert listed.exit_code == 0, listed.output
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["index"] == 0 and row["from_window"] == now + MAX_ANNOUNCE_AHEAD_WINDOWS and row["voided_block"] == 0
        for index, key, says in ((3, ADMIN_KEY, "holds 1 announcement"), (0, trainer_key, "admin only"),
                                 (0, "0x12", "--admin-key")):
            out = runner.invoke(app, ["chain", "void", str(index), *where, "--admin-key", key])
            assert out.exit_code == 2 and says in out.output, out.output
            assert len(out.output.strip().splitlines()) == 1, out.output
        out = runner.invoke(app, ["chain", "void", "0", *where, "--admin-key", ADMIN_KEY])
        assert out.exit_code == 0 and "voided in block" in out.output, out.output
        again = runner.invoke(app, ["chain", "void", "0", *where, "--admin-key", ADMIN_KEY])
        assert again.exit_code == 2 and "already voided" in again.output, again.output
        assert chain.checkpoint_announcements()[0].voided_block > 0
        chain.announce_checkpoint(alice, window_of_block(chain.current_block() + 1) + ACTIVATION_WINDOWS,
                                  b"\x07" * 32, MH, "file:///y")  # the trainer can announce again
        assert len(chain.checkpoint_announcements()) == 2
    finally:
        server.close()


def test_settled_announcements_are_read_once(alice):
    """A node reads every announcement at each window: records, hotkeys and voids that are a window
    deep are read once and kept, and a later void is still seen."""
    from adapters.chain.evm import ANNOUNCEMENT_CACHE_DEPTH

    chain = trainer_chain(alice)
    w = window_start(chain)
    for k in range(3):
        chain.announce_checkpoint(alice, w + ACTIVATION_WINDOWS + k, bytes([k + 1]) * 32, MH, f"file:///c/{k}")
    first = chain.checkpoint_announcements()
    chain.mine(ANNOUNCEMENT_CACHE_DEPTH)
    assert chain.checkpoint_announcements() == first  # read in full while not settled: now kept
    reads: list[str] = []
    real_call = chain._call

    def counting(fn, what):
        reads.append(what)
        return real_call(fn, what)

    chain._call = counting
    assert chain.checkpoint_announcements() == first
    assert sorted(reads) == sorted(["announcement count"] + [f"announcement {i}'s void" for i in range(3)])
    chain.void_announcement(1)
    voided = chain.checkpoint_announcements()
    assert voided[1].voided_block > 0 and [a.voided_block for a in (voided[0], voided[2])] == [0, 0]
    chain.mine(ANNOUNCEMENT_CACHE_DEPTH)
    assert chain.checkpoint_announcements() == voided  # the void is settled now: this read keeps it
    reads.clear()
    assert chain.checkpoint_announcements() == voided
    assert "announcement 1's void" not in reads and "announcement 1" not in reads  # the settled void is kept
