"""The Bittensor adapter's offline parts: wallet keys sign bundles, commitment fields, typed errors.
Live tests run only with ROLLPROOF_SUBTENSOR (e.g. ws://127.0.0.1:9944) and ROLLPROOF_NETUID set."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subtensor_reads import SubtensorReads

from adapters.chain.bittensor_chain import MAX_FIELDS, RAW_FIELD_BYTES, BittensorChain, commitment_fields, fields_bytes
from verification.errors import ChainError


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
    bundle = build_bundle(tiny, ctx, key, 1)
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
