"""The Bittensor adapter's offline parts: wallet keys sign bundles, commitment fields, typed errors,
the SDK calls it makes (against a recording stand-in). tests/test_subtensor_live.py runs the same
adapter against a real subtensor runtime; test_live_subtensor_reads here reads any node named by
ROLLPROOF_SUBTENSOR (e.g. ws://127.0.0.1:9944) and ROLLPROOF_NETUID."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subtensor_reads import SubtensorReads

from adapters.chain.bittensor_chain import MAX_FIELDS, RAW_FIELD_BYTES, BittensorChain, commitment_fields, fields_bytes
from verification.constants import MAX_COMMITMENT_BYTES, PROTOCOL_VERSION
from verification.errors import ChainError, ChainRefusedError


@given(st.binary(max_size=MAX_FIELDS * RAW_FIELD_BYTES))
def test_commitment_fields_round_trip(data):
    fields = commitment_fields(data)
    assert len(fields) <= MAX_FIELDS
    assert all(len(next(iter(f))) <= len("Raw128") for f in fields)
    assert fields_bytes(fields) == data


def test_too_long_commitment_is_refused():
    with pytest.raises(ChainError):
        commitment_fields(b"x" * (MAX_FIELDS * RAW_FIELD_BYTES + 1))


def test_fields_bytes_ignores_other_variants():
    assert fields_bytes([{"Raw2": "0x6869"}, {"Sha256": "0x" + "00" * 32}, "ResetBondsFlag"]) == b"hi"


def test_wallet_hotkey_signs_a_bundle_the_verifier_accepts(tmp_path, tiny, ctx, local_drand):
    import bittensor as bt

    from miner.proof import build_bundle
    from adapters.connect import WalletOptions, load_hotkey
    from verification.verifier import Verifier

    bt.Wallet(name="w", hotkey="h", path=str(tmp_path)).create_new_hotkey(use_password=False, suppress=True)
    key, dev = load_hotkey(WalletOptions("w", "h", str(tmp_path)), allow_dev=False)
    assert not dev
    bundle = build_bundle(tiny, ctx, key)
    assert bundle.header.hotkey == key.ss58_address
    assert Verifier(tiny, [local_drand.info]).verify(bundle).ok


def test_unreachable_subtensor_is_a_typed_error():
    with pytest.raises(ChainError, match="subtensor"):
        BittensorChain("ws://127.0.0.1:9", 1).current_block()


@pytest.mark.skipif(not os.environ.get("ROLLPROOF_SUBTENSOR"), reason="live: set ROLLPROOF_SUBTENSOR and ROLLPROOF_NETUID")
def test_live_subtensor_reads():
    chain = BittensorChain(os.environ["ROLLPROOF_SUBTENSOR"], int(os.environ.get("ROLLPROOF_NETUID", "1")))
    head = chain.current_block()
    block = chain.block(head - 1)
    assert block.number == head - 1 and len(block.hash) == 32 and block.timestamp > 1_600_000_000
    neurons = chain.neurons()
    assert all(n.uid >= 0 and n.hotkey for n in neurons)
    chain.commitments(head // 20)  # parses whatever is there without raising


def test_score_ledger_on_the_subtensor_evm(alice, bob):
    from adapters.chain.evm import EVMChain
    from verification.constants import WINDOW_BLOCKS

    evm = EVMChain.embedded_chain(5)
    evm.mine(3 * WINDOW_BLOCKS)
    # subtensor uid 7 is alice; on the EVM registry she gets her own uid, with a permit from the admin
    chain = BittensorChain("finney", 5, subtensor=SubtensorReads(evm.current_block(), [(2, bob.ss58_address),
                                                                                   (7, alice.ss58_address)]),
                           ledger=evm)
    assert chain.ledger_entry(7, 1) is None
    evm.register(bob)
    evm_uid = evm.register(alice)
    assert evm_uid != 7
    with pytest.raises(ChainError, match="permit"):
        chain.record_scores(alice, 1, [2, 7], [65535, 0], b"\x01" * 32, b"\x02" * 32)
    with pytest.raises(ChainError, match=f"rollproof chain permit {evm_uid} "):
        chain.prepare_ledger(alice)
    evm.set_validator_permit(evm_uid)
    assert chain.prepare_ledger(alice) == evm_uid
    chain.record_scores(alice, 1, [2, 7], [65535, 0], b"\x01" * 32, b"\x02" * 32)
    entry = chain.ledger_entry(7, 1)
    assert entry is not None and entry.validator_uid == 7
    assert entry.uids == (2, 7) and entry.scores == (65535, 0)
    assert entry.verified_root == b"\x01" * 32 and entry.report_hash == b"\x02" * 32
    assert evm.ledger_entry(evm_uid, 1) == entry.__class__(**{**entry.__dict__, "validator_uid": evm_uid})
    assert chain.ledger_entry(2, 1) is None  # bob recorded nothing
    with pytest.raises(ChainError, match="already recorded"):
        chain.record_scores(alice, 1, [2], [1], b"\x00" * 32, b"\x00" * 32)


def test_ledger_rpc_url_needs_the_contract_addresses():
    from adapters.connect import ChainOptions, open_chain
    from verification.errors import ConfigError

    with pytest.raises(ConfigError, match="--registry"):
        open_chain(ChainOptions(network="finney", ledger_rpc_url="http://127.0.0.1:9"), keypair=None)
    with pytest.raises(ConfigError, match="Bittensor"):
        open_chain(ChainOptions(ledger_rpc_url="http://127.0.0.1:9"))


def test_the_announcer_option(alice):
    from adapters.connect import ChainOptions, open_chain, parse_announcer
    from verification.errors import ConfigError

    assert parse_announcer(None) is None and parse_announcer("12") == 12
    assert parse_announcer(alice.ss58_address) == alice.ss58_address
    with pytest.raises(ConfigError, match="neither a uid nor an ss58 hotkey"):
        parse_announcer("owner")
    chain = open_chain(ChainOptions(network="finney", netuid=4, announcer=alice.ss58_address))
    try:  # opening connects nothing: the announcer is the one named
        assert isinstance(chain, BittensorChain) and chain.announcer_hotkey() == alice.ss58_address
        assert chain.trainer_hotkey() == alice.ss58_address
    finally:
        chain.close()
    with pytest.raises(ConfigError, match="--announcer goes with a Bittensor --network"):
        open_chain(ChainOptions(announcer="3"))
    with pytest.raises(ConfigError, match="--announcer goes with a Bittensor --network without --ledger-rpc-url"):
        open_chain(ChainOptions(network="finney", announcer="3", ledger_rpc_url="http://127.0.0.1:9"))


def test_announcing_as_another_hotkey_sends_nothing(alice, bob):
    reads = SubtensorReads(10, [(0, alice.ss58_address)])
    chain = BittensorChain("finney", 3, subtensor=reads, wallet=SimpleNamespace(), announcer=alice.ss58_address)
    with pytest.raises(ChainRefusedError, match="is not the checkpoint announcer"):
        chain.announce_checkpoint(bob, 5, b"\x01" * 32, b"\x02" * 32, "s3://b/")
    with pytest.raises(ChainRefusedError, match="announced location .*must be 1..75 bytes"):
        chain.announce_checkpoint(alice, 2, b"\x01" * 32, b"\x02" * 32, "s3://" + "b" * 80)
    with pytest.raises(ChainError, match="would land in window 0: on subtensor it must land in window 3"):
        chain.announce_checkpoint(alice, 5, b"\x01" * 32, b"\x02" * 32, "s3://b/x.json")
    assert reads.executed == []


@pytest.mark.parametrize("limit,last,block,ready", [
    (100, [0, 950], 1000, False),   # uid 1 set 50 blocks ago, the limit is 100
    (100, [0, 900], 1000, True),    # exactly the limit: subtensor allows it
    (100, [0, 0], 1000, True),      # never set
    (0, [0, 999], 1000, True),      # no limit on this subnet
    (100, [0], 1000, True),         # uid not in LastUpdate yet
])
def test_weights_ready_follows_the_subnet_rate_limit(alice, bob, limit, last, block, ready):
    reads = SubtensorReads(block, [(0, alice.ss58_address), (1, bob.ss58_address)],
                           storage={"WeightsSetRateLimit": limit, "LastUpdate": last})
    assert BittensorChain("finney", 3, subtensor=reads).weights_ready(1) is ready


# ---- the adapter's handling of the SDK (docs/protocol.md section 12) ---------------------------
def _chain(reads, netuid=3):
    return BittensorChain("finney", netuid, subtensor=reads, wallet=SimpleNamespace())


def test_neurons_reads_the_metagraph_without_commitments(alice):
    reads = SubtensorReads(10, [(0, alice.ss58_address)])
    assert _chain(reads).uid_of(alice.ss58_address) == 0
    assert reads.metagraph_calls == [{"netuid": 3, "commitments": False}]


def test_a_missing_subnet_is_a_clear_refusal(alice):
    chain = _chain(SubtensorReads(10, None), netuid=77)
    with pytest.raises(ChainRefusedError, match="netuid 77 does not exist"):
        chain.neurons()
    with pytest.raises(ChainRefusedError, match="netuid 77 does not exist"):
        chain.preflight(alice)


# ---- preflight: refusals before any work ----------------------------------------------------------
def test_preflight_refuses_an_unregistered_hotkey(alice, bob):
    chain = _chain(SubtensorReads(10, [(0, bob.ss58_address)]))
    with pytest.raises(ChainRefusedError, match=f"hotkey {alice.ss58_address} is not registered on netuid 3"):
        chain.preflight(alice)
    with pytest.raises(ChainRefusedError, match="not registered"):
        chain.preflight(alice, validator=True)


def test_preflight_refuses_a_validator_without_a_permit(alice, bob):
    reads = SubtensorReads(10, [(0, alice.ss58_address), (1, bob.ss58_address)], permits={1},
                           storage={"MaxAllowedValidators": 64, "WeightsVersionKey": 0})
    chain = _chain(reads)
    assert chain.preflight(alice) == 0  # a miner needs no permit
    with pytest.raises(ChainRefusedError, match="uid 0 on netuid 3 but no validator permit.*the 64 neurons") as err:
        chain.preflight(alice, validator=True)
    assert "\n" not in str(err.value)
    assert chain.preflight(bob, validator=True) == 1
    assert reads.executed == []


@pytest.mark.parametrize("required,refused", [(0, False), (PROTOCOL_VERSION, False), (PROTOCOL_VERSION + 1, True)])
def test_preflight_refuses_a_validator_for_a_newer_weights_version(alice, required, refused):
    chain = _chain(SubtensorReads(10, [(0, alice.ss58_address)], storage={"WeightsVersionKey": required}))
    assert chain.preflight(alice) == 0  # miners set no weights
    if refused:
        with pytest.raises(ChainRefusedError, match=f"version {required} or later.*upgrade rollproof"):
            chain.preflight(alice, validator=True)
    else:
        assert chain.preflight(alice, validator=True) == 0


@pytest.mark.parametrize("name,refused", [("SpaceLimitExceeded", False), ("AccountNotAllowedCommit", True),
                                          ("NotEnoughBalanceToStake", False)])
def test_refusals_keep_the_chain_error_name(alice, name, refused):
    failed = SimpleNamespace(success=False, message="the pallet's description", error=SimpleNamespace(name=name))
    chain = _chain(SubtensorReads(10, [(0, alice.ss58_address)], result=failed))
    with pytest.raises(ChainError, match=f"{name}: the pallet's description") as err:
        chain.commit(alice, 0, b"rp3" + b"\x00" * 40 + b"https://x/")
    assert isinstance(err.value, ChainRefusedError) is refused


def test_sdk_exceptions_keep_their_name(alice):
    import bittensor as bt

    class Raising(SubtensorReads):
        def submit_call(self, call, wallet, **kwargs):
            raise bt.ChainError("Space Limit Exceeded for the current interval", name="SpaceLimitExceeded")

    with pytest.raises(ChainError, match="SpaceLimitExceeded"):
        _chain(Raising(10, [])).commit(alice, 0, b"rp3" + b"\x00" * 40 + b"https://x/")


def test_an_oversized_commitment_is_refused_before_sending(alice):
    reads = SubtensorReads(10, [(0, alice.ss58_address)])
    with pytest.raises(ChainRefusedError, match="--public-url"):
        _chain(reads).commit(alice, 0, b"x" * (MAX_COMMITMENT_BYTES + 1))
    assert reads.executed == []
    _chain(reads).commit(alice, 0, b"x" * MAX_COMMITMENT_BYTES)
    assert len(reads.executed) == 1


@pytest.mark.parametrize("required", [0, 1, PROTOCOL_VERSION])
def test_weights_carry_the_protocol_version(alice, required):
    reads = SubtensorReads(10, [(0, alice.ss58_address)], storage={"WeightsVersionKey": required})
    _chain(reads).set_weights(alice, 5, [0, 1, 2], [65535, 0, 7])
    (intent,) = reads.executed
    assert intent.version_key == PROTOCOL_VERSION and intent.netuid == 3
    assert intent.uids == [0, 2] and intent.weights == [65535.0, 7.0]


def test_weights_for_a_newer_version_are_refused_before_sending(alice):
    reads = SubtensorReads(10, [], storage={"WeightsVersionKey": PROTOCOL_VERSION + 1})
    with pytest.raises(ChainRefusedError, match="upgrade rollproof"):
        _chain(reads).set_weights(alice, 5, [0], [1])
    assert reads.executed == []


def test_window_start_blocks_come_from_the_finalized_chain(monkeypatch):
    import adapters.chain.bittensor_chain as mod

    class Lagging(SubtensorReads):
        """The head is at 30; finality catches up one block per read."""
        final = 26

        @property
        def finalized_block(self):
            self.final += 1
            return self.final

        @finalized_block.setter
        def finalized_block(self, value):
            pass

        def block_info(self, n):
            return SimpleNamespace(number=n, hash="0x" + "ab" * 32, timestamp=1_700_000_000 + n)

    monkeypatch.setattr(mod, "FINALITY_POLL_S", 0.0)
    reads = Lagging(30, [])
    info = _chain(reads).block(29)
    assert info.number == 29 and reads.final >= 29 and info.timestamp == 1_700_000_029
    with pytest.raises(ChainError, match="does not exist yet"):
        _chain(Lagging(30, [])).block(31)
    monkeypatch.setattr(mod, "FINALITY_WAIT_S", 0.0)
    with pytest.raises(ChainError, match="not finalized"):
        _chain(Lagging(30, [])).block(30)


def test_registration_over_the_maximum_burn_pays_nothing(alice):
    reads = SubtensorReads(10, [], burn_rao=2_500_000_000)
    chain = _chain(reads)
    assert chain.burn_cost() == 2_500_000_000
    with pytest.raises(ChainRefusedError, match="costs 2.5 TAO now, above the maximum 1 TAO"):
        chain.register(alice, max_burn_rao=1_000_000_000)
    assert reads.executed == []


def test_close_ends_the_sdk_client():
    closed = []
    reads = SubtensorReads(10, [])
    reads.close = lambda: closed.append(True)
    chain = _chain(reads)
    with chain:
        assert chain.current_block() == 10
    assert closed == [True] and chain._sub is None


def test_a_window_before_the_beacon_genesis_is_not_minable(local_drand):
    from adapters.beacons import LocalBeaconSource
    from adapters.chain.base import BlockInfo
    from adapters.windows import window_context
    from verification.errors import BeaconError, BeaconUnavailableError, WindowBeforeBeaconError

    class FreshChain:
        netuid = 1

        def block(self, n):  # a fresh subtensor: block 0 has timestamp 0
            return BlockInfo(n, b"\x01" * 32, 0 if n == 0 else local_drand.info.genesis_time + 12 * n)

    beacons = LocalBeaconSource(local_drand, clock=lambda: local_drand.info.genesis_time + 10**6)
    with pytest.raises(WindowBeforeBeaconError, match="window 0 starts at block 0") as err:
        window_context(FreshChain(), beacons, 0)
    assert isinstance(err.value, BeaconError) and not isinstance(err.value, BeaconUnavailableError)
    assert window_context(FreshChain(), beacons, 1).window == 1


# ---- the weights route: from the runtime's metadata (adapters/chain/subtensor_weights.py) --------
SPEC293 = Path(__file__).parent / "data" / "subtensor_spec293_surface.json"  # recorded from the spec-293 runtime


def _metadata(spec_version: int, calls: dict, storage) -> SimpleNamespace:
    """A metadata IR of SubtensorModule alone, shaped as the SDK's (MetadataIR/PalletIR/CallIR)."""
    pallet = SimpleNamespace(name="SubtensorModule",
                             calls=[SimpleNamespace(name=c, args=[SimpleNamespace(name=a) for a in args])
                                    for c, args in calls.items()],
                             storage=[SimpleNamespace(name=s) for s in storage])
    return SimpleNamespace(spec_version=spec_version, pallets=[SimpleNamespace(name="System", calls=[], storage=[]),
                                                               pallet])


def _spec293() -> SimpleNamespace:
    (pallet,) = json.loads(SPEC293.read_text())["pallets"]
    return _metadata(293, pallet["calls"], pallet["storage"])


def _sdk_runtime() -> SimpleNamespace:
    """The runtime the SDK was generated from (its calls and storage descriptors)."""
    import inspect

    import bittensor as bt

    calls = {name: tuple(inspect.signature(fn).parameters)
             for name, fn in vars(bt.calls.SubtensorModule).items() if isinstance(fn, staticmethod)}
    storage = [v.name for v in vars(bt.storage.SubtensorModule).values() if hasattr(v, "container")]
    return _metadata(999, calls, storage)


def test_the_weights_route_follows_the_runtimes_metadata():
    from adapters.chain.subtensor_weights import LEGACY_ARGS, choose_weights_route, surface_from_metadata

    old, new = surface_from_metadata(_spec293()), surface_from_metadata(_sdk_runtime())
    assert old.spec_version == 293 and old.calls["set_weights"] == LEGACY_ARGS
    assert [choose_weights_route(new, cr).kind for cr in (False, True)] == ["sdk", "sdk"]
    legacy = choose_weights_route(old, False)
    assert legacy.kind == "legacy"
    assert "SubnetEpochConsensus" in legacy.reason and "set_mechanism_weights" in legacy.reason
    none = choose_weights_route(old, True)  # commit-reveal: the runtime's own set_weights is refused then
    assert none.kind == "none" and "commit_timelocked_mechanism_weights" in none.reason
    assert "no weight can be set" in none.reason and "\n" not in none.reason
    bare = surface_from_metadata(_metadata(1, {k: v for k, v in old.calls.items() if k != "set_weights"}, old.storage))
    assert choose_weights_route(bare, False).kind == "none"
    renamed = surface_from_metadata(_metadata(1, {**old.calls, "set_weights": ("netuid", "uids", "values")}, old.storage))
    assert choose_weights_route(renamed, False).kind == "none"  # a call this adapter cannot compose
    assert choose_weights_route(None, True).kind == "sdk"  # a client without metadata: as before


def test_weights_on_an_older_runtime_use_its_own_call(alice, bob):
    reads = SubtensorReads(10, [(0, alice.ss58_address), (1, bob.ss58_address)], metadata=_spec293(),
                           storage={"WeightsVersionKey": 1, "MaxWeightsLimit": 65535,
                                    "CommitRevealWeightsEnabled": False})
    chain = _chain(reads)
    chain.set_weights(alice, 5, [0, 1, 2], [30000, 0, 60000])
    chain.set_weights(alice, 6, [1], [9])
    first, second = reads.executed
    assert tuple(first) == ("SubtensorModule", "set_weights", {
        "netuid": 3, "dests": [0, 2], "weights": [32768, 65535], "version_key": PROTOCOL_VERSION})
    assert second[2]["dests"] == [1] and second[2]["weights"] == [65535]
    assert reads.metadata_reads == 1  # read once per connection
    chain.close()
    chain._sub = reads
    chain.set_weights(alice, 7, [1], [9])
    assert reads.metadata_reads == 2


def test_older_runtime_weights_are_clipped_as_the_sdk_clips_them(alice, bob):
    from bittensor.intents.weights import clip_to_max_weight, normalize

    limit = 39321  # 0.6
    reads = SubtensorReads(10, [(0, alice.ss58_address), (1, bob.ss58_address)], metadata=_spec293(),
                           storage={"MaxWeightsLimit": limit, "CommitRevealWeightsEnabled": False})
    _chain(reads).set_weights(alice, 5, [0, 1], [65535, 1000])
    _chain(reads).set_weights(alice, 5, [0], [65535])  # alice (uid 0) weighting herself alone: not clipped
    (_, _, clipped), (_, _, own) = reads.executed
    assert (clipped["dests"], clipped["weights"]) == tuple(normalize([0, 1], clip_to_max_weight([65535, 1000], 0.6)))
    assert max(clipped["weights"]) / sum(clipped["weights"]) <= 0.6 + 1e-4
    assert own["weights"] == [65535]


def test_no_weights_route_sends_nothing_and_says_why(alice):
    from verification.errors import WeightsUnavailableError

    reads = SubtensorReads(10, [(0, alice.ss58_address)], metadata=_spec293(),
                           storage={"CommitRevealWeightsEnabled": True})
    with pytest.raises(WeightsUnavailableError, match="weights for window 5: the subnet runs commit-reveal") as err:
        _chain(reads).set_weights(alice, 5, [0], [1])
    assert "\n" not in str(err.value) and not isinstance(err.value, ChainRefusedError)
    assert reads.executed == []
    new = SubtensorReads(10, [(0, alice.ss58_address)], metadata=_sdk_runtime(),
                         storage={"CommitRevealWeightsEnabled": True})
    _chain(new).set_weights(alice, 5, [0], [1])
    (intent,) = new.executed
    assert type(intent).__name__ == "SetWeights" and intent.version_key == PROTOCOL_VERSION


def test_a_validator_logs_an_unavailable_weight_set_once_per_window(tmp_path, tiny, local_drand, caplog):
    """On a runtime where no weight can be set, each window is journaled deferred with one
    warning naming why (nothing is retried); once a set lands it carries the skipped windows' scores."""
    import logging

    from bittensor.sp_core import Keypair

    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from adapters.fetch import Fetcher
    from adapters.storage import FileStore
    from miner.service import Miner
    from validator.service import Validator
    from verification.challenge import window_of_block, window_start_block
    from verification.errors import WeightsUnavailableError

    caplog.set_level(logging.INFO, logger="rollproof.validator")
    chain = EVMChain.embedded_chain(3)
    beacons = LocalBeaconSource(local_drand, clock=chain.now)
    store = FileStore(tmp_path / "store")
    mkey, vkey = Keypair.create_from_uri("//offline/miner"), Keypair.create_from_uri("//offline/validator")
    muid, vuid = chain.register(mkey), chain.register(vkey)
    chain.set_validator_permit(vuid)
    real_set_weights, attempts = chain.set_weights, []

    def unavailable(keypair, window, uids, weights):  # what BittensorChain.set_weights raises on such a runtime
        attempts.append(window)
        raise WeightsUnavailableError(f"weights for window {window}: the subnet runs commit-reveal and ...: "
                                      f"no weight can be set")

    chain.set_weights = unavailable
    miner = Miner(chain, mkey, tiny, store, beacons, tmp_path / "m")
    validator = Validator(chain, vkey, tiny, beacons, Fetcher(file_roots=[store.root]), tmp_path / "v")
    start = window_of_block(chain.current_block()) + 1
    results = []
    for w in range(start, start + 3):
        chain.mine(window_start_block(w) - chain.current_block())
        assert miner.run_window(w).stage == "committed"
        while not validator.ready(w):
            chain.mine(1)
        if w == start + 2:
            chain.set_weights = real_set_weights  # the runtime takes weights again
        results.append(validator.process_window(w))
    assert attempts == [start, start + 1]  # once per window, never retried
    # the two deferred windows are counted in the set that landed, with its own window
    assert [validator.state.stage(w) for w in range(start, start + 3)] == ["counted"] * 3
    assert [validator.state.counted_in(w) for w in range(start, start + 3)] == [start + 2] * 3
    lines = [r.getMessage() for r in caplog.records if "no weights set" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [f"window {start}", f"window {start + 1}"]
    assert all("no weight can be set" in line and "\n" not in line for line in lines)
    assert [r.wrote_weights for r in results] == [False, False, True]
    assert chain.weights(vuid) == {muid: 65535}
    assert any(f"weights over windows {start}, {start + 1}, {start + 2}" in r.getMessage() for r in caplog.records)
