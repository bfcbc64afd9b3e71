"""The embedded EVM chain and the contracts' rules: registration proofs, one commitment per
window inside the window, weights and ledger only after the window, once, by permitted validators."""

import pytest

from adapters.chain.evm import EVMChain, public_key_of
from verification.challenge import window_of_block, window_start_block
from verification.errors import ChainError


@pytest.fixture()
def chain():
    return EVMChain.embedded_chain(5)


def test_register_is_idempotent_and_lists_neurons(chain, alice, bob):
    assert chain.register(alice) == 0
    assert chain.register(bob) == 1
    assert chain.register(alice) == 0
    assert [(n.uid, n.hotkey) for n in chain.neurons()] == [(0, alice.ss58_address), (1, bob.ss58_address)]
    assert chain.netuid == 5


def test_registration_without_a_valid_hotkey_proof_is_ignored(chain, alice, bob):
    # someone registers Alice's public key with Bob's signature: readers must not believe it
    squatter = chain.account_for(bob)
    chain._transact(squatter, chain.registry.functions.register(public_key_of(alice), b"\x01" * 64), "register")
    assert chain.uid_of(alice.ss58_address) is None
    assert chain.register(alice) == 1  # the real owner still gets a (valid) uid
    assert chain.uid_of(alice.ss58_address) == 1


def test_one_commitment_per_window_inside_the_window(chain, alice):
    chain.register(alice)
    w = window_of_block(chain.current_block())
    chain.commit(alice, w, b"first")
    with pytest.raises(ChainError, match="already committed"):
        chain.commit(alice, w, b"second")
    with pytest.raises(ChainError, match="not the current window"):
        chain.commit(alice, w + 1, b"early")
    recs = chain.commitments(w)
    assert [(r.hotkey, r.data, r.window) for r in recs] == [(alice.ss58_address, b"first", w)]
    assert window_of_block(recs[0].block) == w
    assert chain.commitments(w + 1) == []


def test_commit_needs_registration(chain, alice):
    with pytest.raises(ChainError, match="not registered"):
        chain.commit(alice, 0, b"x")


def test_weights_and_ledger_rules(chain, alice, bob):
    chain.register(alice)
    vuid = chain.register(bob)
    w = window_of_block(chain.current_block())
    with pytest.raises(ChainError, match="no validator permit"):
        chain.set_weights(bob, w, [0], [65535])
    chain.set_validator_permit(vuid)
    with pytest.raises(ChainError, match="window not over"):
        chain.set_weights(bob, w, [0], [65535])
    chain.mine(window_start_block(w + 1) - chain.current_block())
    chain.set_weights(bob, w, [0, 1], [65535, 0])
    assert chain.weights(vuid) == {0: 65535, 1: 0}
    assert chain.weights_window(vuid) == w
    with pytest.raises(ChainError, match="already set"):
        chain.set_weights(bob, w, [0], [1])
    with pytest.raises(ChainError, match="no such dest"):
        chain.mine(20)
        chain.set_weights(bob, w + 1, [9], [1])
    assert chain.ledger_entry(vuid, w) is None
    chain.record_scores(bob, w, [0], [65535], b"\x11" * 32, b"\x22" * 32)
    entry = chain.ledger_entry(vuid, w)
    assert entry.uids == (0,) and entry.scores == (65535,) and entry.verified_root == b"\x11" * 32
    with pytest.raises(ChainError, match="already recorded"):
        chain.record_scores(bob, w, [0], [1], b"\x11" * 32, b"\x22" * 32)
    with pytest.raises(ChainError, match="no validator permit"):
        chain.record_scores(alice, w, [0], [1], b"\x11" * 32, b"\x22" * 32)
    events = chain.ledger_events()
    assert [(e["window"], e["report_hash"]) for e in events] == [(w, b"\x22" * 32)]


def test_simulated_clock_moves_with_blocks(chain):
    t0 = chain.now()
    n0 = chain.current_block()
    chain.mine(5)
    assert chain.current_block() == n0 + 5
    assert chain.now() == t0 + 5 * 12
    assert chain.block(n0 + 5).timestamp == chain.now()
    with pytest.raises(ChainError, match="does not exist"):
        chain.block(n0 + 100)


def test_unreachable_rpc_is_a_typed_error():
    with pytest.raises(ChainError, match="cannot reach"):
        EVMChain.connect("http://127.0.0.1:9", "0x" + "00" * 20, "0x" + "00" * 20)


def test_rpc_chain_without_a_key_refuses_to_write(chain, alice):
    view = EVMChain(chain.w3, chain.registry.address, chain.ledger.address, endpoint="same chain, no keys")
    with pytest.raises(ChainError, match="no EVM key"):
        view.register(alice)
