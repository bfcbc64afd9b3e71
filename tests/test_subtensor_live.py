"""The Bittensor adapter against a real subtensor runtime: node-subtensor spec 293 executed by
chopsticks on 127.0.0.1 (every extrinsic, limit and error is the runtime's own).

The runtime is found through ROLLPROOF_SUBTENSOR_DIR (a directory with `start.sh WORKDIR CHOP_PORT
PROXY_PORT SECONDS`; default ../shared/subtensor next to the repository); the module skips, with
the reason, when it or node/npm is missing or the runtime does not start (npm needs its registry at
first use). ROLLPROOF_SUBTENSOR_WORKDIR keeps chopsticks' node_modules between runs.

What this older runtime lacks is expected, not hidden: the SDK's `SetWeights` pre-check reads
`SubnetEpochConsensus` and `BurnedRegister` reads `CollateralLockShare` (MevShield). The adapter
reads the runtime's metadata and sets weights through the runtime's own `set_weights` instead
(read back here from the chain's storage); registration in these tests uses the raw
`burned_register` call, and the intents themselves are covered by tests/test_bittensor_offline.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.chain.bittensor_chain import BittensorChain, close_sdk_client
from verification.commitment import bundle_name, encode_commitment
from verification.constants import MAX_COMMITMENT_BYTES, PROTOCOL_VERSION, WINDOW_BLOCKS
from verification.errors import ChainError, ChainRefusedError

pytestmark = pytest.mark.live  # out of the default run: README's live-test command runs them

REPO = Path(__file__).resolve().parents[1]
NETUID = 1  # the raonet genesis has netuids 0 and 1
MAX_SPACE = 3100  # Commitments.MaxSpace of the runtime (asserted below)
R2_BASE = "https://pub-0123456789abcdef0123456789abcdef.r2.dev/rp/"  # a 55-byte public base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runtime:
    def __init__(self, workdir: Path, chop_port: int, proxy_port: int):
        self.workdir = workdir
        self.chop_port = chop_port
        self.ws = f"ws://127.0.0.1:{proxy_port}"

    def dev(self, method: str, params: list):
        body = json.dumps({"id": 1, "jsonrpc": "2.0", "method": method, "params": params}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.chop_port}", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310 - loopback dev RPC
            answer = json.loads(resp.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def new_blocks(self, count: int) -> None:
        if count > 0:
            self.dev("dev_newBlock", [{"count": count}])

    def jump_to(self, height: int) -> None:
        """Make the next block number `height` (chopsticks' unsafeBlockHeight): the blocks in
        between are never built. The Commitments pallet keys its budget on block numbers alone, so
        a tempo's worth of windows costs two blocks per window instead of twenty."""
        head = int(self.dev("chain_getHeader", [])["number"], 16)
        if height > head + 1:
            self.dev("dev_newBlock", [{"count": 1, "unsafeBlockHeight": height}])
        elif height == head + 1:
            self.new_blocks(1)

    def set_storage(self, storage: dict) -> None:
        self.dev("dev_setStorage", [storage])

    def fund(self, address: str, tao: int = 1_000_000) -> None:
        self.set_storage({"System": {"Account": [[[address], {"providers": 1, "data": {"free": tao * 10**9}}]]}})


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    home = Path(os.environ.get("ROLLPROOF_SUBTENSOR_DIR", REPO.parent / "shared" / "subtensor"))
    if not (home / "start.sh").is_file():
        pytest.skip(f"no subtensor runtime at {home} (set ROLLPROOF_SUBTENSOR_DIR)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the subtensor runtime needs node >= 20 and npm")
    workdir = Path(os.environ.get("ROLLPROOF_SUBTENSOR_WORKDIR") or tmp_path_factory.mktemp("subtensor"))
    chop, proxy = _free_port(), _free_port()
    started = subprocess.run(["bash", str(home / "start.sh"), str(workdir), str(chop), str(proxy), "3600"],
                             capture_output=True, text=True, timeout=600, env={**os.environ, "PY": sys.executable})
    if started.returncode != 0:
        pytest.skip(f"the subtensor runtime did not start: {(started.stdout + started.stderr).strip()[-300:]}")
    try:
        yield Runtime(workdir, chop, proxy)
    finally:
        for name in ("proxy.pid", "chop.pid"):  # the two processes start.sh started, by their ids
            pid_file = workdir / name
            if pid_file.is_file():
                subprocess.run(["kill", pid_file.read_text().strip()], check=False)


def _keys(uri: str):
    from bittensor.sp_core import Keypair

    return Keypair.create_from_uri(uri)


def _wallet(cold, hot):
    return SimpleNamespace(coldkey=cold, coldkeypub=cold, hotkey=hot)


@pytest.fixture(scope="module")
def alice(runtime):
    key = _keys("//Alice")
    runtime.fund(key.ss58_address)
    return key


def _raw_register(runtime, cold, hot) -> None:
    """The raw burned_register call (the SDK's intent needs MevShield, which this runtime lacks)."""
    import bittensor as bt

    sub = bt.Subtensor(runtime.ws)
    try:
        result = sub.submit_call(bt.calls.SubtensorModule.burned_register(netuid=NETUID, hotkey=hot.ss58_address),
                                 _wallet(cold, hot), signer="coldkey")
        assert result.success, result.message
    finally:
        close_sdk_client(sub)


@pytest.fixture(scope="module")
def miner_key(runtime, alice):
    hot = _keys("//Alice/rollproof-miner")
    _raw_register(runtime, alice, hot)
    return hot


def _chain(runtime, cold=None, hot=None, netuid=NETUID, announcer=None) -> BittensorChain:
    return BittensorChain(runtime.ws, netuid, wallet=_wallet(cold, hot) if hot is not None else None,
                          announcer=announcer)


def _interval(chain: BittensorChain, block: int) -> int:
    """The Commitments pallet's usage interval of block: subtensor's epoch index."""
    import bittensor as bt

    tempo = int(chain.sub.query(bt.storage.SubtensorModule.Tempo, [NETUID]))
    return (block + NETUID + 1) // (tempo + 1)


def _to_interval_start(runtime, chain: BittensorChain) -> None:
    """Advance to the first block of a fresh usage interval (the next extrinsic lands in it)."""
    import bittensor as bt

    tempo = int(chain.sub.query(bt.storage.SubtensorModule.Tempo, [NETUID]))
    head = chain.current_block()
    next_start = (_interval(chain, head + 1) + 1) * (tempo + 1) - NETUID - 1
    runtime.jump_to(next_start - 1)
    assert _interval(chain, chain.current_block() + 1) == _interval(chain, chain.current_block()) + 1


# ---- reads -------------------------------------------------------------------------------------
def test_reads_blocks_from_the_finalized_chain(runtime):
    from adapters.beacons import HttpRelaySource
    from adapters.windows import window_context
    from verification.drand import PUBLIC_NETWORKS
    from verification.errors import WindowBeforeBeaconError

    with _chain(runtime) as chain:
        runtime.new_blocks(1)
        head = chain.current_block()
        block = chain.block(head)
        assert block.number == head
        assert block.hash.hex() == runtime.dev("chain_getBlockHash", [head]).removeprefix("0x")
        final = chain.finalized_block()
        assert chain.block(final).hash.hex() == runtime.dev("chain_getFinalizedHead", []).removeprefix("0x")
        assert chain.block(0).timestamp == 0  # a fresh chain's genesis block
        assert block.timestamp > 1_600_000_000
        # window 0 starts at block 0: before any drand genesis, so it is skipped, not a crash
        beacons = HttpRelaySource(PUBLIC_NETWORKS["quicknet"], ("http://127.0.0.1:9",))
        with pytest.raises(WindowBeforeBeaconError, match="window 0 starts at block 0"):
            window_context(chain, beacons, 0)
        with pytest.raises(ChainError, match="does not exist yet"):
            chain.block(head + 50)


def test_a_missing_subnet_is_one_clear_line(runtime, tmp_path):
    import bittensor as bt
    from typer.testing import CliRunner

    from rollproof.cli import app

    with _chain(runtime, netuid=77) as chain:
        with pytest.raises(ChainRefusedError, match="netuid 77 does not exist"):
            chain.neurons()
    bt.Wallet(name="w", hotkey="h", path=str(tmp_path)).create_new_hotkey(use_password=False, suppress=True)
    out = CliRunner().invoke(app, ["miner", "register", "--network", runtime.ws, "--netuid", "77",
                                   "--wallet.name", "w", "--wallet.hotkey", "h", "--wallet.path", str(tmp_path),
                                   "--max-burn", "1"])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and "AttributeError" not in out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "netuid 77 does not exist" in lines[0]


def test_neurons_and_a_registered_miner(runtime, miner_key):
    with _chain(runtime) as chain:
        uid = chain.uid_of(miner_key.ss58_address)
        assert uid is not None and chain.preflight(miner_key) == uid
        assert all(n.hotkey for n in chain.neurons())


# ---- registration ------------------------------------------------------------------------------
def test_registration_shows_and_guards_the_burn(runtime, alice):
    import bittensor as bt

    hot = _keys("//Alice/rollproof-guarded")
    with _chain(runtime, alice, hot) as chain:
        burn = chain.burn_cost()
        assert burn == int(chain.sub.query(bt.storage.SubtensorModule.Burn, [NETUID])) > 0
        before = chain.sub.balances.balance(coldkey_ss58=alice.ss58_address).rao
        with pytest.raises(ChainRefusedError, match="nothing was paid"):
            chain.register(hot, max_burn_rao=burn - 1)
        assert chain.sub.balances.balance(coldkey_ss58=alice.ss58_address).rao == before
        assert chain.uid_of(hot.ss58_address) is None
        # the SDK's shielded intent reads storage this older runtime does not have: named, typed
        with pytest.raises(ChainError, match="CollateralLockShare"):
            chain.register(hot, max_burn_rao=burn)


def test_cli_register_refuses_a_burn_above_the_maximum(runtime, alice, tmp_path):
    import bittensor as bt
    from typer.testing import CliRunner

    from rollproof.cli import app

    wallet = bt.Wallet(name="w", hotkey="h", path=str(tmp_path))
    wallet.create_new_hotkey(use_password=False, suppress=True)
    args = ["miner", "register", "--network", runtime.ws, "--netuid", str(NETUID),
            "--wallet.name", "w", "--wallet.hotkey", "h", "--wallet.path", str(tmp_path)]
    low = CliRunner().invoke(app, args + ["--max-burn", "0.000000001"])
    assert low.exit_code == 2 and "above --max-burn" in low.output and "nothing was paid" in low.output, low.output
    unset = CliRunner().invoke(app, args)
    assert unset.exit_code == 2 and "pass --max-burn" in unset.output and "TAO" in unset.output, unset.output


# ---- commitments -------------------------------------------------------------------------------
def test_refused_commitments_name_the_chain_error(runtime, alice):
    stranger = _keys("//Alice/rollproof-unregistered")
    with _chain(runtime, alice, stranger) as chain:
        data = encode_commitment(1, b"\x01" * 32, R2_BASE + bundle_name(1, b"\x01" * 32))
        with pytest.raises(ChainRefusedError, match="AccountNotAllowedCommit"):
            chain.commit(stranger, 1, data)


def test_the_commitment_budget_of_an_interval(runtime, alice, miner_key):
    """MaxSpace per interval: 31 commitments of <= 100 bytes fit (a tempo-360 interval has at most
    19 windows), the 32nd is refused; at the old 243 bytes the 13th was already refused."""
    import bittensor as bt

    with _chain(runtime, alice, miner_key) as chain:
        assert int(chain.sub.query(bt.storage.Commitments.MaxSpace)) == MAX_SPACE
        _to_interval_start(runtime, chain)
        interval = _interval(chain, chain.current_block() + 1)
        digest = b"\x05" * 32
        data = encode_commitment(7, digest, R2_BASE + bundle_name(7, digest))
        assert len(data) <= MAX_COMMITMENT_BYTES
        fits = MAX_SPACE // MAX_COMMITMENT_BYTES
        for _ in range(fits):
            chain.commit(miner_key, 7, data)
        with pytest.raises(ChainError, match="SpaceLimitExceeded") as refused:
            chain.commit(miner_key, 7, data)
        assert not isinstance(refused.value, ChainRefusedError)  # the next interval takes it again
        assert _interval(chain, chain.current_block()) == interval

        # the previous protocol's largest commitment (3 + 8 + 32 + 200 bytes), sent raw
        _to_interval_start(runtime, chain)
        big = [{"Raw128": "0x" + "61" * 128}, {"Raw115": "0x" + "62" * 115}]
        call = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [big]})
        results = [chain.sub.submit_call(call, _wallet(alice, miner_key), signer="hotkey") for _ in range(13)]
        assert [r.success for r in results] == [True] * 12 + [False]
        assert results[-1].error.name == "SpaceLimitExceeded"


@pytest.mark.slow
def test_a_miner_commits_every_window_of_two_tempos(runtime, alice, miner_key):
    """At finney's tempo (360), one commitment per window for two whole usage intervals, each in
    the first block of its window (so an interval holds as many as it can): none is refused, and
    each is the record a validator reads for its window."""
    with _chain(runtime, alice, miner_key) as chain:
        runtime.set_storage({"SubtensorModule": {"Tempo": [[[NETUID], 360]]}})
        try:
            _to_interval_start(runtime, chain)
            first = _interval(chain, chain.current_block() + 1)
            per_interval: dict[int, int] = {}
            window = -(-(chain.current_block() + 1) // WINDOW_BLOCKS)  # the first window starting ahead
            while True:
                start = window * WINDOW_BLOCKS
                if _interval(chain, start) >= first + 2:
                    break
                runtime.jump_to(start - 1)  # the commitment lands in the window's first block
                digest = window.to_bytes(32, "big")
                chain.commit(miner_key, window, encode_commitment(window, digest, R2_BASE + bundle_name(window, digest)))
                assert chain.current_block() == start
                (record,) = [r for r in chain.commitments(window) if r.hotkey == miner_key.ss58_address]
                assert record.window == window and record.block == start
                per_interval[_interval(chain, start)] = per_interval.get(_interval(chain, start), 0) + 1
                window += 1
            assert per_interval[first] >= 18 and per_interval[first + 1] >= 18
            assert max(per_interval.values()) <= 19
        finally:
            runtime.set_storage({"SubtensorModule": {"Tempo": [[[NETUID], 100]]}})


# ---- weights -----------------------------------------------------------------------------------
def _past_rate_limit(runtime, chain: BittensorChain) -> None:
    import bittensor as bt

    limit = int(chain.sub.query(bt.storage.SubtensorModule.WeightsSetRateLimit, [NETUID]) or 0)
    runtime.jump_to(chain.current_block() + limit + 2)


def _set_sub(runtime, item: str, value) -> None:
    runtime.set_storage({"SubtensorModule": {item: [[[NETUID], value]]}})
    runtime.new_blocks(1)


def test_weights_follow_the_subnet_version_key(runtime, alice, miner_key):
    """A lone self-weight (no permit needed) through the adapter: it lands with this protocol's
    version key, read back from the chain's Weights storage; a newer required version is refused
    before sending."""
    with _chain(runtime, alice, miner_key) as chain:
        uid = chain.uid_of(miner_key.ss58_address)
        try:
            _set_sub(runtime, "WeightsVersionKey", PROTOCOL_VERSION)
            assert chain.weights_version_key() == PROTOCOL_VERSION
            assert chain.weights_intent([uid], [65535]).version_key == PROTOCOL_VERSION
            _past_rate_limit(runtime, chain)
            chain.set_weights(miner_key, 1, [uid], [7])  # the chain refuses a version_key below the subnet's
            assert chain.weights(uid) == {uid: 65535}  # max-upscaled, as the SDK's intent sends it
            _set_sub(runtime, "WeightsVersionKey", PROTOCOL_VERSION + 1)
            with pytest.raises(ChainRefusedError, match=f"version {PROTOCOL_VERSION + 1} or later"):
                chain.set_weights(miner_key, 1, [uid], [65535])
        finally:
            _set_sub(runtime, "WeightsVersionKey", 0)


def test_weights_land_through_the_runtimes_own_call(runtime, alice, miner_key):
    """This runtime's metadata lacks what the SDK's SetWeights needs (SubnetEpochConsensus,
    set_mechanism_weights): the adapter says so once and sends the runtime's own
    SubtensorModule.set_weights, signed by the validator's hotkey, conformed as the SDK would (the
    subnet's MaxWeightsLimit clip): the weights are read back from the chain's storage. With
    commit-reveal on, no call of this runtime can take them: one line, nothing sent."""
    import bittensor as bt

    from verification.errors import WeightsUnavailableError

    vkey = _keys("//Alice/rollproof-weights")
    _raw_register(runtime, alice, vkey)
    st = bt.storage.SubtensorModule
    with _chain(runtime, alice, vkey) as chain:
        vuid, muid = chain.uid_of(vkey.ss58_address), chain.uid_of(miner_key.ss58_address)
        surface = chain.runtime_surface()
        assert surface.spec_version == 293 and "SubnetEpochConsensus" not in surface.storage
        route = chain.weights_route()
        assert route.kind == "legacy" and "SubnetEpochConsensus" in route.reason, route
        before = [n.uid for n in chain.neurons() if n.validator_permit]
        limit = int(chain.sub.query(st.MaxWeightsLimit, [NETUID]))
        try:
            _permits(runtime, chain, {vuid})
            _past_rate_limit(runtime, chain)
            chain.set_weights(vkey, 1, [muid, vuid], [65535, 30000])
            assert chain.weights(vuid) == {muid: 65535, vuid: 30000}
            landed = int(chain.sub.query(st.LastUpdate, [NETUID])[vuid])
            assert landed == chain.current_block()

            # a subnet limit the raw values break (65535 of 66535 > 0.6): clipped before sending,
            # as the SDK's intent does; the chain takes it (unclipped it refuses MaxWeightExceeded)
            _set_sub(runtime, "MaxWeightsLimit", 39321)  # 0.6 of u16
            _past_rate_limit(runtime, chain)
            chain.set_weights(vkey, 2, [muid, vuid], [65535, 1000])
            stored = chain.weights(vuid)
            assert set(stored) == {muid, vuid} and stored[muid] == 65535
            assert stored[muid] / sum(stored.values()) <= 0.6 + 1e-4, stored

            # commit-reveal on: this runtime lacks the SDK's timelocked commit, and its own
            # set_weights is refused while commit-reveal is on: one line, nothing sent
            _set_sub(runtime, "CommitRevealWeightsEnabled", True)
            _past_rate_limit(runtime, chain)
            head, last = chain.current_block(), int(chain.sub.query(st.LastUpdate, [NETUID])[vuid])
            with pytest.raises(WeightsUnavailableError, match="commit-reveal.*no weight can be set") as none:
                chain.set_weights(vkey, 3, [muid], [65535])
            assert "\n" not in str(none.value) and not isinstance(none.value, ChainRefusedError)
            assert chain.current_block() == head and int(chain.sub.query(st.LastUpdate, [NETUID])[vuid]) == last
        finally:
            _set_sub(runtime, "CommitRevealWeightsEnabled", False)
            _set_sub(runtime, "MaxWeightsLimit", limit)
            _permits(runtime, chain, set(before))


# ---- preflight ---------------------------------------------------------------------------------
def _permits(runtime, chain: BittensorChain, holders: set[int]) -> None:
    permits = [n.uid in holders for n in sorted(chain.neurons(), key=lambda n: n.uid)]
    runtime.set_storage({"SubtensorModule": {"ValidatorPermit": [[[NETUID], permits]]}})
    runtime.new_blocks(1)


def test_preflight_refusals_are_one_clear_line(runtime, alice, miner_key, tmp_path):
    import bittensor as bt
    from typer.testing import CliRunner

    from rollproof.cli import app

    stranger = _keys("//Alice/rollproof-unregistered")
    with _chain(runtime, netuid=77) as missing:
        with pytest.raises(ChainRefusedError, match="netuid 77 does not exist"):
            missing.preflight(miner_key, validator=True)
    with _chain(runtime) as chain:
        with pytest.raises(ChainRefusedError, match=f"hotkey {stranger.ss58_address} is not registered on netuid"):
            chain.preflight(stranger)
        uid = chain.uid_of(miner_key.ss58_address)
        before = [n.uid for n in chain.neurons() if n.validator_permit]
        assert int(chain.sub.query(bt.storage.SubtensorModule.MaxAllowedValidators, [NETUID])) == chain.max_validators() > 0
        try:
            _permits(runtime, chain, set())
            assert chain.preflight(miner_key) == uid  # a miner needs no permit
            with pytest.raises(ChainRefusedError, match=f"uid {uid} on netuid {NETUID} but no validator permit"):
                chain.preflight(miner_key, validator=True)
            _permits(runtime, chain, {uid})
            assert chain.preflight(miner_key, validator=True) == uid
            runtime.set_storage({"SubtensorModule": {"WeightsVersionKey": [[[NETUID], PROTOCOL_VERSION + 1]]}})
            runtime.new_blocks(1)
            assert chain.preflight(miner_key) == uid
            with pytest.raises(ChainRefusedError, match=f"version {PROTOCOL_VERSION + 1} or later.*upgrade rollproof"):
                chain.preflight(miner_key, validator=True)
        finally:
            runtime.set_storage({"SubtensorModule": {"WeightsVersionKey": [[[NETUID], 0]]}})
            _permits(runtime, chain, set(before))

        # through `validator run`: a registered hotkey without a permit stops before the model loads
        wallet = bt.Wallet(name="v", hotkey="h", path=str(tmp_path))
        wallet.create_new_hotkey(use_password=False, suppress=True)
        _raw_register(runtime, alice, wallet.hotkey)
        vuid = chain.uid_of(wallet.hotkey.ss58_address)
        assert vuid is not None and vuid not in before
        out = CliRunner().invoke(app, ["validator", "run", "--network", runtime.ws, "--netuid", str(NETUID),
                                       "--wallet.name", "v", "--wallet.hotkey", "h", "--wallet.path", str(tmp_path),
                                       "--chain-wait", "0", "--state-dir", str(tmp_path)])
        assert out.exit_code == 2, out.output
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"uid {vuid} on netuid {NETUID} but no validator permit" in lines[0], out.output


# ---- checkpoint announcements through the announcer's commitment -----------------------------------
def test_checkpoint_announcements_follow_the_owner_hotkey_commitment(runtime, alice, miner_key):
    """The subnet owner's hotkey announces two checkpoints (and later commits something else); another
    registered hotkey commits a well-formed announcement too. A reader derives, for every window,
    the checkpoint the rule puts in force: the owner's announcement that landed ACTIVATION windows
    before, read in the state of past blocks; the stranger's never counts."""
    import bittensor as bt

    from verification.announcement import checkpoint_manifest_name, encode_announcement
    from verification.checkpoint import checkpoint_for
    from verification.commitment import bundle_name, encode_commitment
    from verification.constants import ACTIVATION_WINDOWS

    owner = _keys("//Alice/rollproof-owner")
    _raw_register(runtime, alice, owner)
    st = bt.storage.SubtensorModule
    runtime.set_storage({"SubtensorModule": {"SubnetOwnerHotkey": [[[NETUID], owner.ss58_address]]}})
    runtime.new_blocks(1)

    def fp(tag: int) -> bytes:
        return bytes([tag]) * 32

    def location(tag: int) -> str:
        return R2_BASE + checkpoint_manifest_name(NETUID, fp(tag))

    with _chain(runtime, alice, owner) as trainer, _chain(runtime) as reader, \
            _chain(runtime, alice, miner_key) as stranger:
        try:
            assert str(reader.sub.query(st.SubnetOwnerHotkey, [NETUID])) == owner.ss58_address
            assert reader.trainer_hotkey() == owner.ss58_address
            _to_interval_start(runtime, trainer)
            v = trainer.current_block() // WINDOW_BLOCKS + 1
            # every block is built from here on: the rule reads the state of past blocks
            runtime.new_blocks(v * WINDOW_BLOCKS - 1 - trainer.current_block())

            with pytest.raises(ChainRefusedError, match="is not the checkpoint announcer"):
                stranger.announce_checkpoint(miner_key, v + ACTIVATION_WINDOWS, fp(9), fp(9), location(9))
            with pytest.raises(ChainError, match=f"would land in window {v}"):
                trainer.announce_checkpoint(owner, v + ACTIVATION_WINDOWS + 1, fp(1), fp(2), location(1))
            assert trainer.current_block() == v * WINDOW_BLOCKS - 1  # refused before sending

            trainer.announce_checkpoint(owner, v + ACTIVATION_WINDOWS, fp(1), fp(2), location(1))  # lands in v
            a_block = trainer.current_block()
            assert a_block == v * WINDOW_BLOCKS
            # the stranger's announcement (well-formed, same window rule, its own hotkey), sent raw
            data = encode_announcement(NETUID, v + ACTIVATION_WINDOWS, fp(9), fp(9), location(9))
            call = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [[{"Raw128": "0x" + data[:128].hex()},
                                                                                       {f"Raw{len(data) - 128}": "0x" + data[128:].hex()}]]})
            assert stranger.sub.submit_call(call, _wallet(alice, miner_key), signer="hotkey").success

            runtime.new_blocks((v + 1) * WINDOW_BLOCKS + 4 - trainer.current_block())
            trainer.announce_checkpoint(owner, v + 1 + ACTIVATION_WINDOWS, fp(3), fp(4), location(3))  # lands in v+1
            runtime.new_blocks((v + 2) * WINDOW_BLOCKS + 7 - trainer.current_block())
            # then the owner's hotkey commits something that is no announcement (in window v+2)
            trainer.commit(owner, v + 2, encode_commitment(v + 2, fp(5), R2_BASE + bundle_name(v + 2, fp(5))))
            runtime.new_blocks((v + 5) * WINDOW_BLOCKS - trainer.current_block())

            first = reader.announcement_in_force(v + ACTIVATION_WINDOWS)
            assert first is not None
            assert (first.from_window, first.fingerprint, first.manifest_hash, first.location, first.block) == \
                (v + ACTIVATION_WINDOWS, fp(1), fp(2), location(1), a_block)
            expected = {v - 1: None, v: None, v + 1: None, v + 2: fp(1), v + 3: fp(3), v + 4: fp(3), v + 5: fp(3)}
            listed = reader.checkpoint_announcements()
            assert [a.fingerprint for a in listed] == [fp(1), fp(3)]  # never the stranger's
            by_uid = _chain(runtime, announcer=reader.uid_of(owner.ss58_address))
            with by_uid:
                for window, fingerprint in expected.items():
                    for derived in (reader.announcement_in_force(window), checkpoint_for(window, listed),
                                    by_uid.announcement_in_force(window)):
                        assert (derived.fingerprint if derived else None) == fingerprint, window
            with _chain(runtime, announcer=miner_key.ss58_address) as other:
                # naming the stranger as announcer is what makes its commitment count
                assert other.announcement_in_force(v + ACTIVATION_WINDOWS).fingerprint == fp(9)
                assert other.trainer_hotkey() == miner_key.ss58_address
            with pytest.raises(ChainError, match="not finalized yet"):
                reader.announcement_in_force(v + 10)
        finally:
            runtime.set_storage({"SubtensorModule": {"SubnetOwnerHotkey": [[[NETUID], "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"]]}})
            runtime.new_blocks(1)


# ---- process exit --------------------------------------------------------------------------------
_CLOSE_SCRIPT = """
import sys, time
from types import SimpleNamespace
from bittensor.sp_core import Keypair
from adapters.chain.bittensor_chain import BittensorChain, close_sdk_client
from verification.errors import ChainError
from stalling_relay import StallingRelay
upstream, netuid, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
relay = StallingRelay(upstream)
cold, hot = Keypair.create_from_uri("//Alice"), Keypair.create_from_uri("//Alice/rollproof-miner")
chain = BittensorChain(relay.url, netuid, wallet=SimpleNamespace(coldkey=cold, coldkeypub=cold, hotkey=hot))
chain.commitments(chain.current_block() // 20)
chain.block(chain.current_block())
try:
    chain.set_weights(hot, 1, [0], [1])
except ChainError as exc:
    print("refused:", exc)
relay.stall(7.0)  # the node answers the websocket close 7 s late (as a loaded one does)
started = time.monotonic()
if how == "sdk":
    chain.sub.close()  # the SDK's own close: 5 s for the handshake, then the loop is stopped
else:
    chain.close()
print(f"closed in {time.monotonic() - started:.1f} s")
"""


@pytest.mark.parametrize("how", ["sdk", "adapter"])
def test_a_closed_chain_leaves_no_pending_tasks(runtime, alice, miner_key, how):
    """A slow close is made to happen (the node's answers held back 7 s): the SDK's own close
    leaves the session's tasks pending and they are reported destroyed at exit; the adapter's close
    waits for the handshake and drains the loop, so nothing is reported."""
    port = int(runtime.ws.rsplit(":", 1)[1])
    out = subprocess.run([sys.executable, "-c", _CLOSE_SCRIPT, str(port), str(NETUID), how],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])})
    assert out.returncode == 0 and "closed in" in out.stdout, out.stderr[-2000:]
    assert "Exception in thread" not in out.stderr, out.stderr[-2000:]
    seconds = float(out.stdout.split("closed in ")[1].split()[0])
    if how == "sdk":
        assert "Task was destroyed but it is pending!" in out.stderr, out.stderr[-2000:]
        assert seconds < 7.0
    else:
        assert "Task was destroyed" not in out.stderr, out.stderr[-2000:]
        assert seconds >= 6.5  # it waited for the late answer instead of cutting it off


# ---- a miner + validator window end to end -----------------------------------------------------
@contextlib.contextmanager
def _removed(path: Path):
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _chain_clock(chain: BittensorChain):
    """The chain's own clock (its head block's timestamp): the local drand signs the rounds the
    chain's time has reached. Chopsticks' blocks advance 1 s each, whatever the wall clock says, and
    the public relays cannot be reached offline, so the window's beacons come from the local signer
    (`--drand local`), verified by the validator exactly as relayed quicknet rounds are."""
    return lambda: float(chain.block(chain.current_block()).timestamp)


def test_a_miner_and_a_validator_window_end_to_end(runtime, alice, miner_key, tiny, local_drand, tmp_path, caplog):
    """A registered miner mines two windows through BittensorChain (bundle in a FileStore, rp3
    commitment of its base); a registered validator with a permit opens the first, verifies the
    bundle (ok) and journals its report and ledger entry; its weights land through the runtime's own
    set_weights (the SDK's SetWeights reads SubnetEpochConsensus, which spec 293 lacks) and are read
    back from the chain. Its loop then keeps going: it scores the second window, whose weights wait
    for the subnet's rate limit (journaled deferred: they count in the next set), and no
    write is refused."""
    import hashlib
    import logging
    import threading

    from adapters.beacons import LocalBeaconSource
    from adapters.checkpoints import ModelResolver
    from adapters.fetch import Fetcher
    from adapters.storage import FileStore
    from miner.service import Miner
    from validator.service import Validator
    from verification.commitment import decode_commitment

    vkey = _keys("//Alice/rollproof-validator")
    _raw_register(runtime, alice, vkey)
    # a short store path: the committed base (file:///…/) must fit the 57 bytes a subtensor
    # commitment leaves for it, and pytest's tmp_path alone is longer than that
    short = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    store = FileStore(short)
    with _chain(runtime, alice, miner_key) as mchain, _chain(runtime, alice, vkey) as vchain, \
            _removed(short):
        beacons = LocalBeaconSource(local_drand, clock=_chain_clock(mchain))
        # the checkpoint in force comes from chain data (no announcer here: the base model)
        miner = Miner(mchain, miner_key, tiny, store, beacons, tmp_path / "miner",
                      resolver=ModelResolver(mchain, tiny, Fetcher(file_roots=[store.root])))
        # past the validator's registration by more than WeightsSetRateLimit, in a fresh commitment interval
        runtime.jump_to(mchain.current_block() + 150)
        _to_interval_start(runtime, mchain)
        w = mchain.current_block() // WINDOW_BLOCKS + 1

        runtime.jump_to(w * WINDOW_BLOCKS)
        for window in (w, w + 1):
            # every block is built from here on: the validator reads a window's commitments as of the
            # window's last block, which a jump (unsafeBlockHeight) would leave unbuilt
            runtime.new_blocks(window * WINDOW_BLOCKS - mchain.current_block())  # the window's first block
            rec = miner.run_window(window)
            assert rec.stage == "committed", rec
            (on_chain,) = [r for r in mchain.commitments(window) if r.hotkey == miner_key.ss58_address]
            c = decode_commitment(on_chain.data)
            assert c.window == window and c.bundle_hash.hex() == rec.bundle_hash
            assert c.location == rec.location == (store.root / bundle_name(window, c.bundle_hash)).as_uri()
            assert window * WINDOW_BLOCKS <= on_chain.block < (window + 1) * WINDOW_BLOCKS
        # the chain's clock passes window w's opening round (deadline + 6 s + a period, at 1 s a block)
        runtime.new_blocks((w + 1) * WINDOW_BLOCKS + 12 - mchain.current_block())

        vuid = vchain.uid_of(vkey.ss58_address)
        permits = [n.uid == vuid for n in sorted(vchain.neurons(), key=lambda n: n.uid)]
        runtime.set_storage({"SubtensorModule": {"ValidatorPermit": [[[NETUID], permits]]}})
        runtime.new_blocks(1)
        assert {n.uid: n.validator_permit for n in vchain.neurons()}[vuid] is True
        assert vchain.weights_ready(vuid)
        validator = Validator(vchain, vkey, tiny, LocalBeaconSource(local_drand, clock=_chain_clock(vchain)),
                              Fetcher(file_roots=[store.root]), tmp_path / "validator",
                              resolver=ModelResolver(vchain, tiny, Fetcher(file_roots=[store.root])))
        assert vchain.checkpoint_announcements() == [] and vchain.trainer_hotkey() is None
        assert validator.preflight() == vuid and validator.ready(w) and not validator.ready(w + 1)

        # window w: verified, journaled, and its weights land through the runtime's own call
        assert vchain.weights_route().kind == "legacy"
        result = validator.process_window(w)
        assert (result.window, result.wrote_weights) == (w, True)
        assert validator.state.stage(w) == "counted"
        report_bytes = validator.state.report_path(w).read_bytes()
        (mine,) = [m for m in json.loads(report_bytes)["miners"] if m["hotkey"] == miner_key.ss58_address]
        assert mine["reason"] == "ok" and mine["weight"] == 65535 and mine["credited_rollouts"] > 0, mine
        entry = vchain.ledger_entry(vuid, w)
        assert entry is not None and entry.report_hash == hashlib.sha256(report_bytes).digest()
        muid = vchain.uid_of(miner_key.ss58_address)
        assert vchain.weights(vuid) == {muid: 65535}

        # the loop keeps verifying: window w+1 is scored; the rate limit (WeightsSetRateLimit blocks
        # since w's set) has not passed, so its scores wait for the next set; nothing is refused
        runtime.new_blocks((w + 2) * WINDOW_BLOCKS + 12 - vchain.current_block())
        caplog.set_level(logging.INFO, logger="rollproof.validator")
        stop = threading.Event()
        guard = threading.Timer(300, stop.set)  # a loop that never reports stops here and fails below
        guard.start()
        try:
            results = validator.run(stop, max_windows=1, poll_s=0.2)
        finally:
            guard.cancel()
        assert not stop.is_set(), "the validator loop reported no window"
        assert [(r.window, r.wrote_weights) for r in results] == [(w + 1, False)]
        assert validator.state.stage(w + 1) == "deferred"
        (mine,) = [m for m in json.loads(validator.state.report_path(w + 1).read_bytes())["miners"]
                   if m["hotkey"] == miner_key.ss58_address]
        assert mine["reason"] == "ok", mine
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "refuses writes" in m], messages
        assert any(f"window {w + 1}: the chain's weight rate limit has not passed" in m for m in messages), messages
        assert vchain.weights(vuid) == {muid: 65535}
