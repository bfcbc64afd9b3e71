"""The EVM chain: the project's SubnetRegistry and ScoreLedger contracts on any EVM.

* embedded (the default): web3's EthereumTesterProvider over py-evm, in this process, with a
  simulated clock (BLOCK_SECONDS a block) that advances only when the owner mines;
* any JSON-RPC endpoint (`--rpc-url`): a local anvil, or the Bittensor EVM (chain id 964 mainnet, 945 testnet).

Hotkeys are sr25519 and the EVM cannot check them, so each registration carries the hotkey's
signature over PRF("evm-register", chain_id, registry, owner); readers drop registrations whose
proof fails and keep the first valid registration of a hotkey (docs/protocol.md section 12)."""

from __future__ import annotations

import secrets
import threading
import time
import warnings

from adapters.chain.base import BlockInfo, Chain, CommitmentRecord, LedgerEntry, Neuron
from adapters.contracts import load_artifact
from verification.challenge import window_of_block
from verification.checkpoint import Announcement
from verification.constants import ACTIVATION_WINDOWS, MAX_ANNOUNCE_AHEAD_WINDOWS, WINDOW_BLOCKS
from verification.errors import ChainError, ChainRefusedError, SignatureError
from verification.prf import prf
from verification.signing import sign, verify

BLOCK_SECONDS = 12  # simulated seconds per block on the embedded chain (Bittensor's block time)
FUND_WEI = 10**20  # what the embedded chain gives each new participant account
TX_TIMEOUT_S = 120
# blocks below the head after which an announcement's record, hotkey and void block are read once and
# kept (they never change once written); a reorg deeper than this would leave a node a stale copy
ANNOUNCEMENT_CACHE_DEPTH = WINDOW_BLOCKS
# contract reverts that no retry can fix (an operator must act): the node raises ChainRefusedError
PERMANENT_REVERTS = ("not the owner of uid", "no validator permit", "no such uid", "admin only", "trainer only",
                     "announcement too far ahead", "no such announcement", "already voided")


def registration_message(chain_id: int, registry: str, owner: str) -> bytes:
    return prf("evm-register", chain_id, bytes.fromhex(registry[2:]), bytes.fromhex(owner[2:]))


def _web3_errors():
    from eth_tester.exceptions import TransactionFailed, ValidationError
    from web3.exceptions import Web3Exception

    return (Web3Exception, TransactionFailed, ValidationError, ConnectionError, OSError, ValueError, TimeoutError)


def ss58_of(public_key: bytes) -> str:
    from bittensor.sp_core import Keypair

    return Keypair(public_key=bytes(public_key), ss58_format=42).ss58_address


def public_key_of(keypair) -> bytes:
    return bytes(keypair.public_key)


class EVMChain(Chain):
    name = "evm"

    def __init__(self, w3, registry_address: str, ledger_address: str, *, endpoint: str = "embedded",
                 evm_keys: dict[str, str] | None = None, embedded: "EmbeddedEVM | None" = None):
        self.w3 = w3
        self.endpoint = endpoint
        self.embedded = embedded
        self._accounts: dict[str, object] = {}
        try:
            self.chain_id = int(w3.eth.chain_id)
            reg = load_artifact("SubnetRegistry")
            led = load_artifact("ScoreLedger")
            self.registry = w3.eth.contract(address=w3.to_checksum_address(registry_address), abi=reg["abi"])
            self.ledger = w3.eth.contract(address=w3.to_checksum_address(ledger_address), abi=led["abi"])
            self.netuid = int(self.registry.functions.netuid().call())
            self.window_blocks = int(self.registry.functions.window_blocks().call())
        except _web3_errors() as exc:
            raise ChainError(f"cannot reach the rollproof contracts at {endpoint}: {exc}") from exc
        if self.window_blocks != WINDOW_BLOCKS:
            raise ChainError(f"registry uses {self.window_blocks}-block windows, the protocol {WINDOW_BLOCKS}")
        activation = int(self._call(self.registry.functions.activation_windows(), "activation windows"))
        if activation != ACTIVATION_WINDOWS:
            raise ChainError(f"registry activates checkpoints after {activation} windows, the protocol "
                             f"after {ACTIVATION_WINDOWS}")
        self._neurons: list[tuple[int, bytes, str, bool]] = []  # (uid, hotkey pubkey, owner, proof ok)
        self._announcements: dict[int, tuple] = {}  # index -> settled record (checkpoint_announcements)
        self._voided: dict[int, int] = {}  # index -> settled void block
        for hotkey, key in (evm_keys or {}).items():
            self.add_evm_key(hotkey, key)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def connect(cls, rpc_url: str, registry: str, ledger: str, **kw) -> "EVMChain":
        from web3 import Web3

        # no web3-level retries (5 x 30 s by default would stall a call for minutes): the nodes' own
        # outage backoff retries, and says so once
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}, exception_retry_configuration=None))
        return cls(w3, registry, ledger, endpoint=rpc_url, **kw)

    @staticmethod
    def deploy(w3, admin, netuid: int, window_blocks: int = WINDOW_BLOCKS) -> tuple[str, str]:
        """Deploy both contracts from `admin` (an eth_account LocalAccount or an unlocked address);
        returns (registry, ledger) addresses."""
        reg = load_artifact("SubnetRegistry")
        led = load_artifact("ScoreLedger")
        registry = _deploy(w3, admin, reg, netuid, window_blocks, ACTIVATION_WINDOWS, MAX_ANNOUNCE_AHEAD_WINDOWS)
        ledger = _deploy(w3, admin, led, registry)
        return registry, ledger

    @classmethod
    def embedded_chain(cls, netuid: int, *, start_time: int | None = None, auto_mine: bool = False) -> "EVMChain":
        evm = EmbeddedEVM(start_time=start_time, auto_mine=auto_mine)
        registry, ledger = cls.deploy(evm.w3, evm.admin, netuid)
        return cls(evm.w3, registry, ledger, endpoint="embedded", embedded=evm)

    # ---- accounts -----------------------------------------------------------------------------
    def add_evm_key(self, hotkey: str, private_key: str) -> str:
        from eth_account import Account

        acct = Account.from_key(private_key)
        self._accounts[hotkey] = acct
        return acct.address

    def account_for(self, keypair):
        acct = self._accounts.get(keypair.ss58_address)
        if acct is None and self.embedded is not None:
            from eth_account import Account

            acct = Account.from_key("0x" + secrets.token_hex(32))
            self.embedded.fund(acct.address)
            self._accounts[keypair.ss58_address] = acct
        if acct is None:
            raise ChainRefusedError(f"no EVM key for hotkey {keypair.ss58_address}: pass --evm-key (a funded account)")
        return acct

    def preflight(self, keypair, *, validator: bool = False) -> int:
        """Registration (Chain.preflight), then what the contracts check on every write: the EVM key
        is the account that registered the uid, and a validator holds a permit."""
        uid = super().preflight(keypair, validator=validator)
        owner = next(o for u, _hk, o, _ok in self._neurons if u == uid)
        acct = self.account_for(keypair)
        if owner.lower() != acct.address.lower():
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} holds uid {uid}, registered by EVM account {owner}, "
                                    f"but the EVM key given is account {acct.address}: every commitment and weight "
                                    f"from it would revert (not the owner of uid); pass that account's --evm-key")
        if validator and not self.validator_permit(uid):
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} holds uid {uid} but no validator permit on "
                                    f"{self.endpoint}: the deployer grants it with `rollproof chain permit {uid} "
                                    f"--rpc-url … --registry … --ledger … --admin-key …`")
        return uid

    # ---- reading ------------------------------------------------------------------------------
    def current_block(self) -> int:
        try:
            return int(self.w3.eth.block_number)
        except _web3_errors() as exc:
            raise ChainError(f"cannot read the block number from {self.endpoint}: {exc}") from exc

    def block(self, number: int) -> BlockInfo:
        from web3.exceptions import BlockNotFound

        try:
            b = self.w3.eth.get_block(number)
        except BlockNotFound:
            raise ChainError(f"block {number} does not exist yet") from None
        except _web3_errors() as exc:
            raise ChainError(f"cannot read block {number} from {self.endpoint}: {exc}") from exc
        return BlockInfo(int(b["number"]), bytes(b["hash"]), int(b["timestamp"]))

    def now(self) -> float:
        if self.embedded is not None:
            return float(self.embedded.head_time())
        return time.time()

    def _call(self, fn, what: str):
        try:
            return fn.call()
        except _web3_errors() as exc:
            raise ChainError(f"cannot read {what} from {self.endpoint}: {exc}") from exc

    def _refresh_neurons(self) -> None:
        count = int(self._call(self.registry.functions.neuron_count(), "neuron count"))
        for uid in range(len(self._neurons), count):
            hotkey, owner, _block, proof = self._call(self.registry.functions.neurons(uid), f"neuron {uid}")
            try:
                verify(ss58_of(hotkey), registration_message(self.chain_id, self.registry.address, owner), bytes(proof))
                ok = True
            except SignatureError:
                ok = False
            self._neurons.append((uid, bytes(hotkey), owner, ok))

    def _valid_uids(self) -> list[tuple[int, str]]:
        """(uid, ss58 hotkey) of the first registration of each hotkey whose proof verifies."""
        self._refresh_neurons()
        seen: set[bytes] = set()
        out = []
        for uid, hotkey, _owner, ok in self._neurons:
            if ok and hotkey not in seen:
                seen.add(hotkey)
                out.append((uid, ss58_of(hotkey)))
        return out

    def validator_permit(self, uid: int) -> bool:
        return bool(self._call(self.registry.functions.validator_permit(uid), f"permit of {uid}"))

    def neurons(self) -> list[Neuron]:
        return [Neuron(uid, hotkey, self.validator_permit(uid)) for uid, hotkey in self._valid_uids()]

    def uid_of(self, hotkey: str) -> int | None:
        # registrations only: no permit reads (one RPC round trip per neuron on a remote node)
        return next((uid for uid, hk in self._valid_uids() if hk == hotkey), None)

    def commitments(self, window: int) -> list[CommitmentRecord]:
        out = []
        for uid, hotkey in self._valid_uids():
            block = int(self._call(self.registry.functions.commitment_block(uid, window), "commitment block"))
            if block == 0:
                continue
            data = bytes(self._call(self.registry.functions.commitment(uid, window), "commitment"))
            out.append(CommitmentRecord(uid, hotkey, window, block, data))
        return out

    def weights_window(self, validator_uid: int) -> int | None:
        w = int(self._call(self.registry.functions.weights_window(validator_uid), "weights window"))
        return None if w == 0 else w - 1

    def weights(self, validator_uid: int) -> dict[int, int]:
        _w, dests, values = self._call(self.registry.functions.get_weights(validator_uid), "weights")
        return {int(d): int(v) for d, v in zip(dests, values)}

    def checkpoint_announcements(self) -> list[Announcement]:
        """Every announcement in the registry, in index order. Records and hotkeys never change once
        written, nor does a void block once set: those of announcements (and voids) at least
        ANNOUNCEMENT_CACHE_DEPTH blocks below the head are kept, so a read of n announcements costs
        the count, the head and one void read per unvoided announcement, not three reads each."""
        count = int(self._call(self.registry.functions.announcement_count(), "announcement count"))
        settled = self.current_block() - ANNOUNCEMENT_CACHE_DEPTH  # deeper than any reorg we expect
        cache = self._announcements
        out = []
        for i in range(count):
            record = cache.get(i)
            if record is None:
                from_window, fp, mh, location, block = self._call(self.registry.functions.announcements(i),
                                                                   f"announcement {i}")
                signer = bytes(self._call(self.registry.functions.announcement_hotkey(i), f"announcement {i}'s hotkey"))
                try:
                    text = bytes(location).decode("utf-8")
                except UnicodeDecodeError:
                    text = ""  # an undecodable location cannot be fetched; the resolver reports it
                record = (int(from_window), bytes(fp), bytes(mh), text, int(block),
                          "" if signer == bytes(32) else ss58_of(signer))
                if record[4] <= settled:
                    cache[i] = record
            voided = self._voided.get(i)
            if voided is None:
                voided = int(self._call(self.registry.functions.voided_block(i), f"announcement {i}'s void"))
                if 0 < voided <= settled:
                    self._voided[i] = voided
            from_window, fp, mh, text, block, signer = record
            out.append(Announcement(from_window, fp, mh, text, block, voided, signer))
        return out

    def trainer_hotkey(self) -> str | None:
        key = bytes(self._call(self.registry.functions.trainer_hotkey(), "trainer hotkey"))
        return None if key == bytes(32) else ss58_of(key)

    def set_trainer(self, hotkey: str, evm_address: str, admin=None) -> None:
        """Admin: the account allowed to announce checkpoints, and the hotkey that signs manifests.
        On the embedded chain the admin is the tester's first account."""
        from bittensor.sp_core import Keypair

        try:
            pubkey = bytes(Keypair(ss58_address=hotkey).public_key)
            fn = self.registry.functions.set_trainer(self.w3.to_checksum_address(evm_address), pubkey)
        except (ValueError, TypeError) as exc:
            raise ChainError(f"bad trainer hotkey or address: {exc}") from None
        if self.embedded is not None and admin is None:
            try:
                self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": self.embedded.admin}))
            except _web3_errors() as exc:
                raise ChainError(f"set trainer refused: {exc}") from exc
        elif admin is None:
            raise ChainError("setting the trainer needs the admin key")
        else:
            self._transact(admin, fn, "set trainer")

    def announce_checkpoint(self, keypair, from_window: int, fingerprint: bytes, manifest_hash: bytes,
                            location: str) -> None:
        """Refuses before sending a from_window the registry would refuse where it lands (the next
        block): ChainError before ACTIVATION_WINDOWS ahead (a later call may need a later window),
        ChainRefusedError past MAX_ANNOUNCE_AHEAD_WINDOWS ahead (a window given in blocks, 2**64 - 1)."""
        landing = window_of_block(self.current_block() + 1)
        if not 0 <= from_window < 2**64 or from_window > landing + MAX_ANNOUNCE_AHEAD_WINDOWS:
            raise ChainRefusedError(f"checkpoint announcement for window {from_window}: at most "
                                    f"{MAX_ANNOUNCE_AHEAD_WINDOWS} windows after the current window {landing} "
                                    f"(MAX_ANNOUNCE_AHEAD_WINDOWS)")
        if from_window < landing + ACTIVATION_WINDOWS:
            raise ChainError(f"checkpoint announcement for window {from_window}: announcement for a past window "
                             f"(the earliest is {landing + ACTIVATION_WINDOWS}, ACTIVATION_WINDOWS after {landing})")
        self._transact(self.account_for(keypair),
                       self.registry.functions.announce_checkpoint(from_window, fingerprint, manifest_hash,
                                                                   location.encode()),
                       f"checkpoint announcement for window {from_window}")

    def void_announcement(self, index: int, admin=None) -> None:
        """Admin only (the deployer): void announcement `index` (docs/protocol.md section 15). On the
        embedded chain the admin is the tester's first account."""
        fn = self.registry.functions.void_announcement(index)
        if self.embedded is not None and admin is None:
            try:
                self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": self.embedded.admin}))
            except _web3_errors() as exc:
                raise _refusal(f"void of announcement {index} refused: {exc}") from exc
        elif admin is None:
            raise ChainError("voiding an announcement needs the admin key")
        else:
            self._transact(admin, fn, f"void of announcement {index}")

    def ledger_entry(self, validator_uid: int, window: int) -> LedgerEntry | None:
        uids, scores, root, report, block = self._call(self.ledger.functions.entry(validator_uid, window), "ledger entry")
        if int(block) == 0:
            return None
        return LedgerEntry(validator_uid, window, tuple(map(int, uids)), tuple(map(int, scores)),
                           bytes(root), bytes(report), int(block))

    def ledger_events(self, from_block: int = 0) -> list[dict]:
        try:
            logs = self.ledger.events.ScoresRecorded().get_logs(from_block=from_block)
        except _web3_errors() as exc:
            raise ChainError(f"cannot read ledger events from {self.endpoint}: {exc}") from exc
        return [dict(log["args"]) | {"block": int(log["blockNumber"])} for log in logs]

    # ---- writing ------------------------------------------------------------------------------
    def _transact(self, account, fn, what: str):
        from web3.exceptions import ContractLogicError

        try:
            tx = fn.build_transaction({
                "from": account.address,
                "nonce": self.w3.eth.get_transaction_count(account.address),
                "chainId": self.chain_id,
            })
            signed = account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TX_TIMEOUT_S)
        except ContractLogicError as exc:
            raise _refusal(f"{what} refused by the contract: {exc.message or exc}") from exc
        except _web3_errors() as exc:
            if "execution reverted" in str(exc):  # eth-tester in process: the revert reason, as text
                raise _refusal(f"{what} failed at {self.endpoint}: {exc}") from exc
            raise ChainError(f"{what} failed at {self.endpoint}: {exc}") from exc
        if int(receipt["status"]) != 1:
            raise ChainError(f"{what} reverted in block {receipt['blockNumber']}")
        return receipt

    def register(self, keypair) -> int:
        existing = self.uid_of(keypair.ss58_address)
        if existing is not None:
            return existing
        acct = self.account_for(keypair)
        proof = sign(keypair, registration_message(self.chain_id, self.registry.address, acct.address))
        self._transact(acct, self.registry.functions.register(public_key_of(keypair), proof), "register")
        uid = self.uid_of(keypair.ss58_address)
        if uid is None:
            raise ChainError("registration landed but the hotkey has no valid uid")
        return uid

    def _uid(self, keypair) -> int:
        uid = self.uid_of(keypair.ss58_address)
        if uid is None:
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} is not registered on netuid {self.netuid}")
        return uid

    def commit(self, keypair, window: int, data: bytes) -> None:
        self._transact(self.account_for(keypair), self.registry.functions.commit(self._uid(keypair), window, data),
                       f"commitment for window {window}")

    def set_weights(self, keypair, window: int, uids: list[int], weights: list[int]) -> None:
        self._transact(self.account_for(keypair),
                       self.registry.functions.set_weights(self._uid(keypair), window, list(uids), list(weights)),
                       f"weights for window {window}")

    def record_scores(self, keypair, window: int, uids: list[int], scores: list[int],
                      verified_root: bytes, report_hash: bytes) -> None:
        self._transact(self.account_for(keypair),
                       self.ledger.functions.record(self._uid(keypair), window, list(uids), list(scores),
                                                    verified_root, report_hash),
                       f"score ledger for window {window}")

    def set_validator_permit(self, uid: int, allowed: bool = True, admin=None) -> None:
        """Admin only (the deployer). On the embedded chain the admin is the tester's first account."""
        if self.embedded is not None and admin is None:
            try:
                tx = self.registry.functions.set_validator_permit(uid, allowed).transact({"from": self.embedded.admin})
                self.w3.eth.wait_for_transaction_receipt(tx)
            except _web3_errors() as exc:
                raise ChainError(f"validator permit refused: {exc}") from exc
            return
        if admin is None:
            raise ChainError("setting a validator permit needs the admin key")
        self._transact(admin, self.registry.functions.set_validator_permit(uid, allowed), "validator permit")

    # ---- time on the embedded chain -----------------------------------------------------------
    def mine(self, n: int = 1) -> None:
        if self.embedded is None:
            raise ChainError("only the embedded chain can be mined on demand")
        self.embedded.mine(n)

    def wait_for_block(self, number: int, stop: threading.Event | None = None, poll_s: float = 2.0):
        if self.embedded is not None and self.embedded.auto_mine:
            missing = number - self.current_block()
            if missing > 0:
                self.embedded.mine(missing)
            return self.block(number)
        return super().wait_for_block(number, stop, poll_s)


def _refusal(message: str) -> ChainError:
    """A revert: ChainRefusedError when its reason is one no retry can fix, else ChainError."""
    permanent = any(reason in message for reason in PERMANENT_REVERTS)
    return (ChainRefusedError if permanent else ChainError)(message)


def _deploy(w3, admin, artifact: dict, *args) -> str:
    from web3.exceptions import ContractLogicError

    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    try:
        if isinstance(admin, str):
            tx_hash = factory.constructor(*args).transact({"from": admin})
        else:
            tx = factory.constructor(*args).build_transaction({
                "from": admin.address, "nonce": w3.eth.get_transaction_count(admin.address)})
            tx_hash = w3.eth.send_raw_transaction(admin.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TX_TIMEOUT_S)
    except (ContractLogicError, *_web3_errors()) as exc:
        raise ChainError(f"deploying {artifact['contract']} failed: {exc}") from exc
    return receipt["contractAddress"]


class EmbeddedEVM:
    """py-evm in process, on a simulated clock fully decoupled from the wall clock.

    Every block, whether `mine()` made it or a transaction did (eth-tester mines one block per
    transaction), is stamped exactly BLOCK_SECONDS after its parent; the genesis block is stamped
    `start_time` (default: the wall clock at construction). So block times are monotone and
    BLOCK_SECONDS apart whatever the wall clock does, and `EVMChain.now()` (the head's timestamp,
    which the local drand beacon follows) advances only when blocks are mined.

    Why: py-evm stamps each new pending block max(wall clock, parent + 1) and eth-tester's
    `time_travel` refuses a time before the pending block's ("Space time continuum distortion").
    Once the wall clock overtook the simulated chain (generation slower than BLOCK_SECONDS a block),
    the next `time_travel(head + BLOCK_SECONDS)` raised, and transaction blocks jumped to the wall
    clock. The backend below re-stamps the pending block before each block is mined (and right
    after, so calls see the simulated time), so the wall clock never reaches a block and
    `time_travel` is not used."""

    def __init__(self, start_time: int | None = None, auto_mine: bool = False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from eth_tester import EthereumTester
            from web3 import EthereumTesterProvider, Web3

            start = int(start_time if start_time is not None else time.time())
            backend_class = _simulated_clock_backend()
            backend = backend_class(genesis_parameters=backend_class.generate_genesis_params(
                overrides={"timestamp": start}))
            backend.stamp_pending()
            self.tester = EthereumTester(backend)
            self.w3 = Web3(EthereumTesterProvider(self.tester))
        self.admin = self.tester.get_accounts()[0]
        self.auto_mine = auto_mine

    def head_time(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def mine(self, n: int = 1) -> None:
        if n > 0:
            self.tester.mine_blocks(n)

    def fund(self, address: str, wei: int = FUND_WEI) -> None:
        tx = self.w3.eth.send_transaction({"from": self.admin, "to": address, "value": wei})
        self.w3.eth.wait_for_transaction_receipt(tx)


def _simulated_clock_backend():
    """eth-tester's PyEVMBackend whose blocks are stamped parent + BLOCK_SECONDS (see EmbeddedEVM)."""
    from eth_tester import PyEVMBackend

    class SimulatedClockBackend(PyEVMBackend):
        def stamp_pending(self) -> None:
            # py-evm builds the pending header (after each block, snapshot revert or import) with
            # the wall clock; only its timestamp changes, the transactions applied to it stay
            head = self.chain.get_canonical_head()
            self.chain.header = self.chain.header.copy(timestamp=head.timestamp + BLOCK_SECONDS)

        def mine_blocks(self, num_blocks=1, *args, **kwargs):
            hashes = []
            for _ in range(num_blocks):
                self.stamp_pending()
                hashes.extend(super().mine_blocks(1, *args, **kwargs))
            self.stamp_pending()
            return tuple(hashes)

        def time_travel(self, to_timestamp):
            raise ChainError("the embedded chain's clock is simulated: mine blocks to move it")

    return SimulatedClockBackend
