"""Miners and validators survive outages of the chain RPC, the bundle store and the drand relay,
however long, and stop at once on permanent refusals.

The chain here is the embedded EVM served over real HTTP JSON-RPC (tests/rpc_server.py) behind a
TCP proxy the test stops and restarts; miner and validator each connect through it with
EVMChain.connect and run their real loops in threads. A block producer thread mines one block
every BLOCK_INTERVAL_S of wall time (12 s of chain time each), and holds off while a node is
generating or verifying (the tiny model is slower than a block here), so chain time stays
consistent with what the nodes do. The local drand signer follows the served chain's head time
in process: the beacon "network" is not behind the proxy."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager

import pytest

from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import EVMChain, EmbeddedEVM
from adapters.fetch import Fetcher
from adapters.outage import Backoff, Dependency
from adapters.storage import FileStore
from miner.service import Miner
from validator.service import Validator
from verification.challenge import window_of_block, window_start_block
from verification.constants import WINDOW_BLOCKS
from verification.errors import BeaconUnavailableError, ChainError, ChainRefusedError, StorageError

from rpc_server import EmbeddedRPCServer, TCPProxy

NETUID = 3
BLOCK_INTERVAL_S = 0.05
FAST = Backoff(initial_s=0.005, max_s=0.02)  # the production default is 1 s doubling to 30 s
POLL_S = 0.01
OLD_FAILURE_LIMIT = 10  # the MAX_CONSECUTIVE_FAILURES both loops used to exit at
WAIT_S = 180  # wall-clock bound on any one condition (a stuck node fails the test, never hangs it)


@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return {n: Keypair.create_from_uri(f"//outages/{n}") for n in ("honest", "validator", "stranger")}


class Producer(threading.Thread):
    """Mines a block every `interval` seconds, except while some node holds it (`hold()`)."""

    def __init__(self, server: EmbeddedRPCServer, interval: float = BLOCK_INTERVAL_S):
        super().__init__(name="block-producer", daemon=True)
        self.server, self.interval = server, interval
        self.stopped = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self):
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def run(self):
        while not self.stopped.wait(self.interval):
            with self._lock:
                if self._busy:
                    continue
            self.server.mine(1)


class Node(threading.Thread):
    """A node's run loop in a thread; whatever escapes it is kept in `error`."""

    def __init__(self, name: str, loop):
        super().__init__(name=name, daemon=True)
        self.loop = loop
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        import torch

        try:
            # torch's grad mode is per thread: load_model switches it off in the loading thread only
            with torch.no_grad():
                self.loop(self.stop)
        except BaseException as exc:  # noqa: BLE001 - the test asserts that nothing escapes
            self.error = exc


class FlakyStore(FileStore):
    """A real FileStore that refuses writes while `down` is set (as a full disk or an unreachable
    bucket does: StorageError from put)."""

    def __init__(self, root):
        super().__init__(root)
        self.down = threading.Event()
        self.refused = 0

    def put(self, key, data):
        if self.down.is_set():
            self.refused += 1
            raise StorageError(f"cannot write {key}: bucket unreachable (test outage)")
        return super().put(key, data)


class FlakyBeacons(LocalBeaconSource):
    """The local signer, behind a relay that serves nothing while `down` is set."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.down = threading.Event()

    def fetch(self, round_number):
        if self.down.is_set():
            raise BeaconUnavailableError(f"no relay served a valid round {round_number}: connection refused (test outage)")
        return super().fetch(round_number)


class OutageNet:
    """Server, proxy, producer, and miner/validator nodes connected over HTTP through the proxy."""

    def __init__(self, tmp_path, lm, drand, keys):
        from eth_account import Account

        self.tmp, self.lm, self.keys = tmp_path, lm, keys
        evm = EmbeddedEVM()
        self.registry, self.ledger = EVMChain.deploy(evm.w3, evm.admin, NETUID)
        self.server = EmbeddedRPCServer(evm).start()
        self.proxy = TCPProxy(("127.0.0.1", self.server.port)).start()
        self.observer = EVMChain.connect(self.server.url, self.registry, self.ledger)  # the test's view, no proxy
        self.evm_keys = {}
        for name, key in keys.items():
            acct = Account.create()
            with self.server.lock:
                evm.fund(acct.address)
            self.evm_keys[name] = acct.key.hex()
        for name in ("honest", "validator"):
            self.chain(name).register(keys[name])
        with self.server.lock:  # the admin is eth-tester's unlocked account, in process
            admin = EVMChain(evm.w3, self.registry, self.ledger, embedded=evm)
            admin.set_validator_permit(admin.uid_of(keys["validator"].ss58_address))
        self.uids = {n: self.observer.uid_of(keys[n].ss58_address) for n in ("honest", "validator")}
        self.beacons = FlakyBeacons(drand, clock=self.server.head_time)
        self.store = FlakyStore(tmp_path / "store")
        self.producer = Producer(self.server)
        self.backoff = FAST  # the nodes' retry delays
        self.nodes: list[Node] = []
        self.results = []  # the validator's finished windows, as on_result reports them

    def chain(self, name: str) -> EVMChain:
        chain = EVMChain.connect(self.proxy.url, self.registry, self.ledger,
                                 evm_keys={self.keys[name].ss58_address: self.evm_keys[name]})
        # web3 retries a refused connection 5 times in 2 s inside each call; off, each poll of the
        # node's loop is one attempt, so the failure counts below are the loop's own
        chain.w3.provider.exception_retry_configuration = None
        return chain

    def miner(self) -> Miner:
        producer = self.producer

        class PacedMiner(Miner):
            def make_bundle(self, ctx, on_tokens=None, should_stop=None):
                with producer.hold():
                    return super().make_bundle(ctx, on_tokens, should_stop)

            def commit_window(self, rec):
                with producer.hold():
                    return super().commit_window(rec)

        return PacedMiner(self.chain("honest"), self.keys["honest"], self.lm, self.store, self.beacons,
                          self.tmp / "miner", backoff=self.backoff)

    def validator(self, chain: EVMChain | None = None) -> Validator:
        producer = self.producer

        class PacedValidator(Validator):
            def score_window(self, window, **kw):
                with producer.hold():
                    return super().score_window(window, **kw)

            def write_window(self, window, **kw):
                with producer.hold():
                    return super().write_window(window, **kw)

        return PacedValidator(chain or self.chain("validator"), self.keys["validator"], self.lm, self.beacons,
                              Fetcher(file_roots=[self.store.root]), self.tmp / "validator", backoff=self.backoff)

    def start(self, miner: Miner | None = None, validator: Validator | None = None) -> None:
        if miner is not None:
            self.nodes.append(Node("miner", lambda stop: miner.run(stop, poll_s=POLL_S)))
        if validator is not None:
            self.nodes.append(Node("validator", lambda stop: validator.run(stop, poll_s=POLL_S,
                                                                          on_result=self.results.append)))
        for node in self.nodes:
            node.start()
        self.producer.start()

    def wait_for(self, condition, what: str):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for node in self.nodes:
                assert node.error is None, f"{node.name} died: {node.error!r}"
                assert node.is_alive(), f"{node.name} exited"
            value = condition()
            if value is not None and value is not False:  # window 0 counts
                return value
            time.sleep(0.02)
        done = [(r.window, [(m["uid"], m["reason"], m["weight"]) for m in r.report.get("miners", [])])
                for r in self.results[-3:]]
        pytest.fail(f"timed out waiting for {what} (head {self.server.head()}; last windows finished: {done})")

    def honest_weighted(self, window: int) -> bool:
        """The validator finished window with the honest miner verified and fully weighted."""
        for r in list(self.results):
            if r.window == window:
                return any(m["hotkey"] == self.keys["honest"].ss58_address and m["reason"] == "ok"
                           and m["weight"] == 65535 for m in r.report.get("miners", []))
        return False

    def first_weighted(self) -> int | None:
        return next((r.window for r in list(self.results) if self.honest_weighted(r.window)), None)

    def close(self) -> None:
        for node in self.nodes:
            node.stop.set()
        self.producer.stopped.set()
        for node in self.nodes:
            node.join(60)
        self.proxy.stop()
        self.server.close()


@pytest.fixture()
def outnet(tmp_path, tiny, local_drand, keys):
    net = OutageNet(tmp_path, tiny, local_drand, keys)
    yield net
    net.close()


def _lines(caplog, logger: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and text in r.getMessage()]


def _assert_running(net: OutageNet) -> None:
    for node in net.nodes:
        assert node.error is None, f"{node.name}: {node.error!r}"
        assert node.is_alive(), f"{node.name} exited"


# ---- the chain RPC goes away mid-window ----------------------------------------------------------

def test_rpc_outage_mid_window_kills_neither_node(outnet, caplog):
    caplog.set_level(logging.INFO)
    net = outnet
    miner, validator = net.miner(), net.validator()
    net.start(miner, validator)
    net.wait_for(net.first_weighted, "a first window scored with the honest miner weighted")

    def mid_committed_window():
        head = net.server.head()
        w = window_of_block(head)
        rec = miner.state.record(w)
        return w if head - window_start_block(w) >= WINDOW_BLOCKS // 3 and rec and rec.stage == "committed" else None

    w = net.wait_for(mid_committed_window, "the middle of a window the miner committed")
    down_at = net.server.head()
    net.proxy.stop()
    # 60 s of chain time (5 blocks of 12 s) at least, and long enough that the old limit of 10
    # consecutive failures would have killed both loops: 15 failed polls each
    net.wait_for(lambda: net.server.head() - down_at >= 5 and miner.outages.chain.failures >= 15
                 and validator.outages.chain.failures >= 15, "15 failed polls by each node")
    failed = {"miner": miner.outages.chain.failures, "validator": validator.outages.chain.failures}
    blocks_down = net.server.head() - down_at
    net.proxy.start()
    net.wait_for(lambda: net.honest_weighted(w) and net.honest_weighted(w + 1),
                 f"windows {w} and {w + 1} scored after the outage")
    _assert_running(net)

    assert blocks_down >= 5 and min(failed.values()) >= 15 > OLD_FAILURE_LIMIT, (blocks_down, failed)
    print(f"RPC down for {blocks_down} blocks ({blocks_down * 12} s of chain time); failed polls {failed}")
    vuid = net.uids["validator"]
    assert net.observer.weights(vuid) == {net.uids["honest"]: 65535}
    assert net.observer.ledger_entry(vuid, w + 1) is not None
    assert miner.state.record(w + 1).stage == "committed"
    for logger in ("rollproof.miner", "rollproof.validator"):
        assert len(_lines(caplog, logger, "chain unreachable")) == 1, _lines(caplog, logger, "chain")
        (back,) = _lines(caplog, logger, "chain reachable again after")
        assert "failed attempts" in back
        assert _lines(caplog, logger, "refuses writes") == []
    (down,) = _lines(caplog, "rollproof.validator", "chain unreachable")
    assert "Connection refused" in down or "connection" in down.lower()


@pytest.mark.slow
def test_an_rpc_outage_of_a_wall_clock_minute_kills_neither_node(outnet, caplog):
    """The RPC gone for a minute of wall time mid-window, with the production backoff (1 s doubling
    to 30 s): the chain goes on without the nodes (about 60 windows pass), both keep running, log the
    outage once, and the windows after it are scored with the honest miner weighted."""
    caplog.set_level(logging.INFO)
    net = outnet
    net.backoff = Backoff()
    miner, validator = net.miner(), net.validator()
    net.start(miner, validator)
    net.wait_for(net.first_weighted, "a first window scored with the honest miner weighted")
    net.wait_for(lambda: (miner.state.record(window_of_block(net.server.head())) or None)
                 and miner.state.record(window_of_block(net.server.head())).stage == "committed",
                 "a window the miner committed")
    down_at = net.server.head()
    net.proxy.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _assert_running(net)
        time.sleep(0.5)
    back_at = net.server.head()
    net.proxy.start()
    after = window_of_block(back_at) + 1
    net.wait_for(lambda: next((r.window for r in list(net.results) if r.window >= after
                               and net.honest_weighted(r.window)), None),
                 f"a window from {after} on scored with the honest miner weighted")
    _assert_running(net)
    print(f"RPC down 60 s: {back_at - down_at} blocks ({(back_at - down_at) // WINDOW_BLOCKS} windows); "
          f"failed polls miner {miner.outages.chain.failures}, validator {validator.outages.chain.failures}")
    assert back_at - down_at >= 10 * WINDOW_BLOCKS  # the chain went on: the nodes must skip ahead
    for logger in ("rollproof.miner", "rollproof.validator"):
        assert len(_lines(caplog, logger, "chain unreachable")) == 1, _lines(caplog, logger, "chain")
        assert len(_lines(caplog, logger, "chain reachable again after")) == 1


# ---- the store refuses writes --------------------------------------------------------------------

def test_a_store_refusing_writes_for_many_blocks_kills_no_miner(outnet, caplog):
    caplog.set_level(logging.INFO)
    net = outnet
    miner, validator = net.miner(), net.validator()
    net.start(miner, validator)
    first = net.wait_for(net.first_weighted, "a first window scored with the honest miner weighted")
    net.wait_for(lambda: window_of_block(net.server.head()) > first + 1, "the next window")
    down_at = net.server.head()
    net.store.down.set()
    net.wait_for(lambda: net.server.head() - down_at >= 10 and miner.outages.store.failures >= 15,
                 "10 blocks and 15 refused uploads")
    assert net.store.refused >= 15
    net.store.down.clear()
    back = window_of_block(net.server.head()) + 1
    net.wait_for(lambda: net.honest_weighted(back), f"window {back} scored after the store came back")
    _assert_running(net)
    assert len(_lines(caplog, "rollproof.miner", "store unreachable")) == 1
    assert len(_lines(caplog, "rollproof.miner", "store reachable again after")) == 1
    assert _lines(caplog, "rollproof.miner", "chain unreachable") == []


# ---- the drand relay serves nothing --------------------------------------------------------------

def test_a_beacon_relay_outage_kills_neither_node(outnet, caplog):
    caplog.set_level(logging.INFO)
    net = outnet
    miner, validator = net.miner(), net.validator()
    net.start(miner, validator)
    first = net.wait_for(net.first_weighted, "a first window scored with the honest miner weighted")
    net.wait_for(lambda: net.server.head() >= window_start_block(first + 2) + 2, "the window after next")
    net.beacons.down.set()
    # the miner needs the beacon at a window's start, the validator once the opening round is due
    net.wait_for(lambda: miner.outages.beacon.failures >= 15 and validator.outages.beacon.failures >= 15,
                 "15 failed beacon fetches by each node")
    net.beacons.down.clear()
    back = window_of_block(net.server.head()) + 1
    net.wait_for(lambda: net.honest_weighted(back), f"window {back} scored after the relay came back")
    _assert_running(net)
    for logger in ("rollproof.miner", "rollproof.validator"):
        assert len(_lines(caplog, logger, "beacon relay unreachable")) == 1, _lines(caplog, logger, "beacon")
        assert len(_lines(caplog, logger, "beacon relay reachable again after")) == 1


# ---- the chain keeps refusing weights ------------------------------------------------------------

def test_validator_keeps_scoring_while_the_chain_refuses_every_weight_set(outnet, caplog):
    caplog.set_level(logging.INFO)
    net = outnet
    vchain = net.chain("validator")
    real_set_weights = vchain.set_weights
    refused = []

    def refuse(keypair, window, uids, weights):  # what finney answers a validator below min stake
        refused.append(window)
        raise ChainError(f"weights for window {window} failed on subtensor 'finney': NotEnoughStakeToSetWeights")

    vchain.set_weights = refuse
    miner, validator = net.miner(), net.validator(vchain)
    net.start(miner, validator)

    def scored_with_honest():
        out = []
        for w in range(window_of_block(net.server.head()) + 1):
            path = validator.state.report_path(w)
            if path.is_file() and any(m["weight"] == 65535 for m in json.loads(path.read_text())["miners"]):
                out.append(w)
        return sorted(out)

    windows = net.wait_for(lambda: s if len(s := scored_with_honest()) >= 3 else None, "three windows scored")
    _assert_running(net)
    vuid = net.uids["validator"]
    assert net.observer.weights(vuid) == {} and len(refused) >= 3
    stages = [validator.state.stage(w) for w in windows]
    # older windows were superseded by newer ones (their scores fold into the next set); the newest
    # may still wait for its ledger write's retry
    assert set(stages[:-2]) == {"deferred"} and stages[-2] in ("deferred", "ledgered", "weights_intent"), stages
    assert stages[-1] in ("scored", "ledgered", "weights_intent"), stages
    for w, stage in zip(windows, stages):  # each window's ledger entry was written: only weights are refused
        assert (net.observer.ledger_entry(vuid, w) is not None) == (stage != "scored"), (w, stage)
    (line,) = _lines(caplog, "rollproof.validator", "chain refuses writes")
    assert "NotEnoughStakeToSetWeights" in line

    vchain.set_weights = real_set_weights  # the stake arrives
    net.wait_for(lambda: net.observer.weights(vuid) or None, "weights on chain")
    _assert_running(net)
    assert net.observer.weights(vuid) == {net.uids["honest"]: 65535}
    net.wait_for(lambda: _lines(caplog, "rollproof.validator", "chain accepts writes again after") or None,
                 "the validator's log line")  # the transaction lands before write_window returns
    assert len(_lines(caplog, "rollproof.validator", "chain accepts writes again after")) == 1
    assert _lines(caplog, "rollproof.validator", "chain unreachable") == []


# ---- permanent refusals: found before any work, never retried ------------------------------------

def _embedded(tmp_path, tiny, local_drand):
    chain = EVMChain.embedded_chain(NETUID, auto_mine=True)
    beacons = LocalBeaconSource(local_drand, clock=chain.now)
    store = FileStore(tmp_path / "store")
    return chain, beacons, store


def _never_called(*a, **kw):
    pytest.fail("work started before the preflight refused")


def test_preflight_refuses_an_unregistered_validator_and_miner(tmp_path, tiny, local_drand, keys):
    chain, beacons, store = _embedded(tmp_path, tiny, local_drand)
    v = Validator(chain, keys["stranger"], tiny, beacons, Fetcher(file_roots=[store.root]), tmp_path / "v")
    with pytest.raises(ChainRefusedError, match="not registered"):
        v.preflight()
    v.score_window = _never_called
    with pytest.raises(ChainRefusedError, match="not registered"):
        v.run(threading.Event(), poll_s=0)
    m = Miner(chain, keys["stranger"], tiny, store, beacons, tmp_path / "m")
    m.make_bundle = _never_called
    with pytest.raises(ChainRefusedError, match="not registered"):
        m.run(threading.Event(), poll_s=0)


def test_preflight_refuses_a_validator_without_permit(tmp_path, tiny, local_drand, keys):
    chain, beacons, store = _embedded(tmp_path, tiny, local_drand)
    uid = chain.register(keys["validator"])
    v = Validator(chain, keys["validator"], tiny, beacons, Fetcher(file_roots=[store.root]), tmp_path / "v")
    v.score_window = _never_called
    with pytest.raises(ChainRefusedError, match=f"uid {uid} but no validator permit"):
        v.run(threading.Event(), poll_s=0)
    assert not list((tmp_path / "v").rglob("stage"))
    chain.set_validator_permit(uid)
    assert v.preflight() == uid


def test_preflight_refuses_an_evm_key_that_does_not_own_the_uid(tmp_path, tiny, local_drand, keys):
    from eth_account import Account

    evm = EmbeddedEVM()
    registry, ledger = EVMChain.deploy(evm.w3, evm.admin, NETUID)
    owner, other = Account.create(), Account.create()
    for acct in (owner, other):
        evm.fund(acct.address)
    hotkey = keys["honest"]
    EVMChain(evm.w3, registry, ledger, evm_keys={hotkey.ss58_address: owner.key.hex()}).register(hotkey)
    chain = EVMChain(evm.w3, registry, ledger, evm_keys={hotkey.ss58_address: other.key.hex()})
    m = Miner(chain, hotkey, tiny, FileStore(tmp_path / "store"), LocalBeaconSource(local_drand, clock=chain.now),
              tmp_path / "m")
    with pytest.raises(ChainRefusedError, match=f"registered by EVM account {owner.address}"):
        m.preflight()
    # and a commitment sent anyway is a permanent refusal, not a retry
    w = window_of_block(chain.current_block())
    with pytest.raises(ChainRefusedError, match="not the owner of uid"):
        chain.commit(hotkey, w, b"x")


# ---- the outage tracker --------------------------------------------------------------------------

def test_backoff_doubles_up_to_its_cap():
    b = Backoff(initial_s=1, max_s=30)
    assert [b.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_dependency_logs_each_transition_once(caplog):
    caplog.set_level(logging.INFO)
    now = [100.0]
    dep = Dependency("store", logging.getLogger("rollproof.test"), Backoff(1, 30), clock=lambda: now[0])
    dep.ok()
    delays = [dep.failed(StorageError("bucket down")) for _ in range(20)]
    now[0] += 95
    dep.ok()
    dep.ok()
    assert delays[:3] == [1, 2, 4] and delays[-1] == 30 and dep.healthy and dep.outages == 1
    assert [r.getMessage() for r in caplog.records] == [
        "store unreachable: bucket down; retrying", "store reachable again after 95 s (20 failed attempts)"]
    dep.failed(StorageError("again"))
    assert dep.failures == 1 and dep.outages == 2
