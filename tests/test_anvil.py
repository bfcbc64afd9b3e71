"""The same contracts on a real JSON-RPC node (anvil). Runs only when ROLLPROOF_ANVIL names the
anvil binary (npm: @foundry-rs/anvil-linux-amd64); the embedded chain covers the rest."""

import os
import socket
import subprocess
import time

import pytest

ANVIL = os.environ.get("ROLLPROOF_ANVIL")
pytestmark = pytest.mark.skipif(not ANVIL, reason="set ROLLPROOF_ANVIL to an anvil binary")
MNEMONIC = "test test test test test test test test test test test junk"


def _key(i: int) -> str:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()


@pytest.fixture()
def anvil_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([ANVIL, "--port", str(port), "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_deploy_register_commit_weights_ledger_on_anvil(anvil_url, alice, bob):
    from eth_account import Account
    from web3 import Web3

    from adapters.chain.evm import EVMChain
    from verification.challenge import window_of_block

    w3 = Web3(Web3.HTTPProvider(anvil_url))
    admin = Account.from_key(_key(0))
    registry, ledger = EVMChain.deploy(w3, admin, 9)
    chain = EVMChain.connect(anvil_url, registry, ledger,
                             evm_keys={alice.ss58_address: _key(1), bob.ss58_address: _key(2)})
    assert chain.netuid == 9
    assert chain.register(alice) == 0 and chain.register(bob) == 1
    chain.set_validator_permit(1, admin=admin)
    w = window_of_block(chain.current_block())
    chain.commit(alice, w, b"rp1-anvil")
    assert chain.commitment_of(alice.ss58_address, w).data == b"rp1-anvil"
    while window_of_block(chain.current_block()) == w:
        w3.provider.make_request("evm_mine", [])
    chain.set_weights(bob, w, [0], [65535])
    chain.record_scores(bob, w, [0], [65535], b"\x01" * 32, b"\x02" * 32)
    assert chain.weights(1) == {0: 65535}
    assert chain.ledger_entry(1, w).report_hash == b"\x02" * 32


def test_bittensor_validator_records_its_ledger_on_an_evm_endpoint(anvil_url, alice, bob):
    """`validator run --network finney --ledger-rpc-url …`: open_chain wires the ScoreLedger at a
    JSON-RPC endpoint behind the Bittensor adapter (the subtensor reads are stood in for)."""
    from eth_account import Account
    from subtensor_reads import SubtensorReads
    from web3 import Web3

    from adapters.chain.evm import EVMChain
    from adapters.connect import ChainOptions, open_chain
    from verification.challenge import window_of_block
    from verification.errors import ChainError, ConfigError

    w3 = Web3(Web3.HTTPProvider(anvil_url))
    admin = Account.from_key(_key(0))
    registry, ledger = EVMChain.deploy(w3, admin, 4)
    chain = open_chain(ChainOptions(network="finney", netuid=4, ledger_rpc_url=anvil_url, registry=registry,
                                    ledger=ledger, evm_key=_key(3)), keypair=bob)
    chain._sub = SubtensorReads(100, [(0, alice.ss58_address), (11, bob.ss58_address)])
    with pytest.raises(ChainError, match="permit"):
        chain.prepare_ledger(bob)
    evm_uid = chain.ledger.uid_of(bob.ss58_address)
    chain.ledger.set_validator_permit(evm_uid, admin=admin)
    assert chain.prepare_ledger(bob) == evm_uid
    w = window_of_block(chain.ledger.current_block())
    while window_of_block(chain.ledger.current_block()) == w:
        w3.provider.make_request("evm_mine", [])
    chain.record_scores(bob, w, [0, 11], [65535, 0], b"\x03" * 32, b"\x04" * 32)
    entry = chain.ledger_entry(11, w)
    assert entry.validator_uid == 11 and entry.uids == (0, 11) and entry.report_hash == b"\x04" * 32
    with pytest.raises(ConfigError, match="netuid 4, not 5"):
        open_chain(ChainOptions(network="finney", netuid=5, ledger_rpc_url=anvil_url, registry=registry,
                                ledger=ledger, evm_key=_key(3)), keypair=bob)
