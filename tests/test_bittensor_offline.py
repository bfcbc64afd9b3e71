"""The Bittensor adapter's offline parts: wallet keys sign bundles, commitment fields, typed errors.
Live tests run only with ROLLPROOF_SUBTENSOR (e.g. ws://127.0.0.1:9944) and ROLLPROOF_NETUID set."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollproof.chain.bittensor_chain import MAX_FIELDS, RAW_FIELD_BYTES, BittensorChain, commitment_fields, fields_bytes
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
    from rollproof.setup import WalletOptions, load_hotkey
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
