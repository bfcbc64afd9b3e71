"""The Bittensor subtensor through the bittensor 11.3.0 SDK.

Mapping of the chain interface:
  current_block / block       Subtensor.block, Subtensor.block_info(n) (hash, timestamp) once n is
                              finalized (a window's seed must not move with a reorg of the tip)
  neurons                     Subtensor.subnets.metagraph(netuid, commitments=False).neurons
  register / burn_cost        Subtensor.execute(bt.BurnedRegister(netuid), wallet), after checking
                              the subnet's current burn against the caller's maximum
  commit / commitments        Commitments.set_commitment with Raw fields (submit_call, signer
                              hotkey) / query_map(Commitments.CommitmentOf, [netuid])
  set_weights                 Subtensor.execute(bt.SetWeights(..., version_key=PROTOCOL_VERSION))
                              (clip, u16 quantize, commit-reveal chosen by the SDK), refused here
                              when the subnet's WeightsVersionKey asks for a newer protocol; on a
                              runtime whose metadata lacks what that intent needs, the runtime's
                              own SubtensorModule.set_weights (same version key, same conforming),
                              or WeightsUnavailableError saying why none can be set
                              (adapters/chain/subtensor_weights.py)
  record_scores / ledger      not on subtensor itself: with --ledger-rpc-url, the ScoreLedger
                              contract on the subtensor's EVM (chain id 964 mainnet, 945 testnet;
                              its block numbers are subtensor's, so windows agree), where the
                              validator's hotkey holds an EVM-registry uid with a permit; without
                              it, this process's memory (the report stays in the validator's state
                              directory).
  preflight                   the metagraph (a missing subnet, an unregistered hotkey); validators
                              also WeightsVersionKey and their uid's validator permit
  checkpoints                 with --ledger-rpc-url, the SubnetRegistry on the subtensor EVM; without
                              it, the commitment of the announcer hotkey (the subnet owner's hotkey,
                              SubtensorModule.SubnetOwnerHotkey, or a configured hotkey or uid):
                              verification/announcement.py, adapters/chain/subtensor_announcements.py

Subtensor keeps only a hotkey's latest commitment; the commitment bytes carry their window, and a
record counts for window w only if it landed in w's blocks.

Refusals keep the chain's error name (`SpaceLimitExceeded`, `AccountNotAllowedCommit`, …) in the
message; those that stay until an operator acts (not registered, no such subnet, a burn above the
maximum, a newer weights version, no validator permit at start) are ChainRefusedError.
`close()` ends the SDK client without leaving its event loop's tasks pending (close_sdk_client)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from adapters.chain.base import BlockInfo, Chain, CommitmentRecord, LedgerEntry, Neuron
from adapters.chain.subtensor_announcements import AnnouncementHistory
from adapters.chain.subtensor_weights import (
    LEGACY_CALL, U16_MAX, RuntimeSurface, WeightsRoute, choose_weights_route, conform_weights, read_runtime_surface,
)
from verification.announcement import (
    MAX_ANNOUNCEMENT_BASE_BYTES, announcement_state_block, encode_announcement, valid_on_subtensor,
)
from verification.challenge import window_deadline_block, window_of_block
from verification.checkpoint import Announcement
from verification.commitment import MAX_BASE_BYTES, decode_commitment
from verification.constants import ACTIVATION_WINDOWS, MAX_COMMITMENT_BYTES, PROTOCOL_VERSION, WINDOW_BLOCKS
from verification.errors import (
    ChainError, ChainRefusedError, CheckpointError, CommitmentFormatError, WeightsUnavailableError,
)

RAW_FIELD_BYTES = 128  # the Commitments pallet's largest Raw variant
MAX_FIELDS = 3
# How long `block(n)` waits for n to be finalized. Finney finalizes 2-3 blocks behind the tip;
# a longer stall is reported as a ChainError the caller retries.
FINALITY_WAIT_S = 90.0
FINALITY_POLL_S = 1.0
# Chain error names that stay until an operator acts: nodes stop on them instead of retrying.
REFUSED_NAMES = frozenset({
    "AccountNotAllowedCommit", "HotKeyNotRegisteredInSubNet", "HotKeyNotRegisteredInNetwork",
    "SubnetNotExists", "SubNetworkDoesNotExist", "MechanismDoesNotExist", "IncorrectWeightVersionKey",
    "NonAssociatedColdKey", "SubNetRegistrationDisabled",
})
RAO_PER_TAO = 10**9
# How long closing the SDK client may take: the websocket's closing handshake (websockets' own
# close_timeout is 10 s), then the session's remaining tasks once cancelled.
SDK_CLOSE_TIMEOUT_S = 20.0
# How far back checkpoint_announcements() lists announcements: enough for the windows nodes derive
# (the current one, the next, and a validator's catch-up of the last 3 closed windows), and inside
# the 256 blocks of state a pruning node keeps. Older windows: announcement_in_force(w), which
# needs an archive node for state that old.
ANNOUNCEMENT_LOOKBACK_BLOCKS = 8 * WINDOW_BLOCKS
# Blocks of state a pruning subtensor node keeps (substrate's default): older reads need an archive.
PRUNED_STATE_BLOCKS = 256
# SubnetOwnerHotkey of a subnet that has none (the all-zero account)
ZERO_ACCOUNT = "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"


def error_name(obj) -> str | None:
    """The chain's error name carried by an SDK result or exception (ExtrinsicResult.error.name,
    bittensor ChainError.name), or None."""
    err = getattr(obj, "error", None)
    for candidate in (getattr(err, "name", None), getattr(obj, "name", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def tao(rao: int) -> str:
    return f"{rao / RAO_PER_TAO:.9f}".rstrip("0").rstrip(".") + " TAO"


def commitment_fields(data: bytes) -> list[dict]:
    """Split bytes into the pallet's Raw<N> fields (at most MAX_FIELDS of RAW_FIELD_BYTES)."""
    chunks = [data[i:i + RAW_FIELD_BYTES] for i in range(0, len(data), RAW_FIELD_BYTES)] or [b""]
    if len(chunks) > MAX_FIELDS:
        raise ChainError(f"commitment of {len(data)} bytes exceeds {MAX_FIELDS} x {RAW_FIELD_BYTES}")
    return [{f"Raw{len(c)}": "0x" + c.hex()} for c in chunks]


def record_bytes(record) -> bytes:
    """The Raw payload of a decoded CommitmentOf record."""
    return fields_bytes(list((record.get("info") or {}).get("fields") or []))


def fields_bytes(fields: list) -> bytes:
    """Concatenate the Raw payloads of decoded commitment fields (other variants are ignored)."""
    out = b""
    for entry in fields or []:
        items = entry.items() if isinstance(entry, dict) else []
        for variant, value in items:
            if str(variant).startswith("Raw"):
                if isinstance(value, str):
                    out += bytes.fromhex(value.removeprefix("0x"))
                elif isinstance(value, (bytes, bytearray)):
                    out += bytes(value)
    return out


def close_sdk_client(sub) -> None:
    """Close a blocking bittensor client so that no task of its event loop is left pending.

    The SDK's own close() gives the websocket's closing handshake 5 s and then stops the loop
    whatever is still running: under load (a busy node, a slow proxy) the handshake takes longer and
    every task of the session is reported "Task was destroyed but it is pending!" at exit. Here the
    client is closed on its own loop with the handshake's full time (websockets bounds it with its
    close_timeout, 10 s), then every task still on the loop is cancelled and awaited, and only then
    is the loop stopped (by the SDK's close, which finds nothing left to do). Uses the SDK's loop
    internals (bittensor 11.3.0 SyncClient); a client without them is closed the SDK's way."""
    loop = getattr(sub, "_loop_thread", None)
    state = getattr(sub, "_state", None)
    client = getattr(sub, "_client", None)
    usable = (loop is not None and isinstance(state, dict) and client is not None
              and not getattr(loop, "is_shutdown", True) and not getattr(loop, "owns_current_thread", True))
    if usable and state.get("connected"):
        async def drain() -> None:
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), SDK_CLOSE_TIMEOUT_S)
            finally:
                me = asyncio.current_task()
                rest = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
                for task in rest:
                    task.cancel()
                if rest:
                    await asyncio.wait(rest, timeout=SDK_CLOSE_TIMEOUT_S)

        try:
            loop.call(drain(), timeout=2 * SDK_CLOSE_TIMEOUT_S + 5)
        except Exception:  # noqa: BLE001 - a broken connection must not raise at exit
            pass
        finally:
            state["connected"] = False  # the SDK's close only stops the (now idle) loop
    if hasattr(sub, "close"):
        with contextlib.suppress(Exception):  # closing a broken connection must not raise at exit
            sub.close()


class BittensorChain(Chain):
    name = "bittensor"

    def __init__(self, network: str, netuid: int, *, wallet=None, subtensor=None, ledger: Chain | None = None,
                 announcer: str | int | None = None):
        """announcer: the hotkey whose commitment carries checkpoint announcements (an ss58 address,
        or a uid whose hotkey is read once); None: the subnet owner's hotkey. Every node of a subnet
        must name the same one. Unused with a ledger (its registry holds the announcements)."""
        self.network = network
        self.netuid = netuid
        self.wallet = wallet
        self._sub = subtensor
        self.ledger = ledger  # an EVMChain running the rollproof contracts on the subtensor's EVM
        self._local_ledger: dict[tuple[int, int], LedgerEntry] = {}
        self.announcer = announcer
        self._announcer_of_uid: str | None = None
        self._announcements = AnnouncementHistory(netuid, self._commitment_at)
        self._surface: tuple[RuntimeSurface | None] | None = None  # the runtime's metadata, read once per connection

    @property
    def sub(self):
        if self._sub is None:
            import bittensor as bt

            try:
                self._sub = bt.Subtensor(self.network)
            except Exception as exc:  # the SDK raises its own error types for unreachable endpoints
                raise ChainError(f"cannot connect to subtensor {self.network!r}: {exc}") from exc
        return self._sub

    def close(self) -> None:
        """End the SDK client (its event loop thread and websocket); reading again reconnects."""
        sub, self._sub = self._sub, None
        self._surface = None
        if sub is not None:
            close_sdk_client(sub)
        if self.ledger is not None and hasattr(self.ledger, "close"):
            self.ledger.close()

    def __enter__(self) -> "BittensorChain":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _read(self, what: str, fn):
        try:
            return fn()
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes a typed ChainError
            name = error_name(exc)
            raise ChainError(f"cannot read {what} from subtensor {self.network!r}: "
                             f"{type(exc).__name__}{f' {name}' if name else ''}: {exc}") from exc

    def current_block(self) -> int:
        return int(self._read("the block number", lambda: self.sub.block))

    def finalized_block(self) -> int:
        return int(self._read("the finalized block number", lambda: self.sub.finalized_block))

    def block(self, number: int) -> BlockInfo:
        """Block `number` of the finalized chain: waits (up to FINALITY_WAIT_S) until it is
        finalized, since the best chain's block at that height can still be replaced and a window's
        problems are derived from its start block's hash."""
        deadline = time.monotonic() + FINALITY_WAIT_S
        while (final := self.finalized_block()) < number:
            head = self.current_block()
            if head < number:
                raise ChainError(f"block {number} does not exist yet (head {head})")
            if time.monotonic() >= deadline:
                raise ChainError(f"block {number} is not finalized after {FINALITY_WAIT_S:.0f} s "
                                 f"(finalized {final}, head {head})")
            time.sleep(FINALITY_POLL_S)
        info = self._read(f"block {number}", lambda: self.sub.block_info(number))
        if info is None or not info.hash:
            raise ChainError(f"block {number} does not exist yet")
        ts = info.timestamp
        seconds = int(ts.timestamp()) if isinstance(ts, datetime) else int(ts or 0)
        return BlockInfo(int(info.number), bytes.fromhex(str(info.hash).removeprefix("0x")), seconds)

    def neurons(self) -> list[Neuron]:
        # commitments=False: the SDK would otherwise read every commitment of the subnet as well
        graph = self._read("the metagraph",
                           lambda: self.sub.subnets.metagraph(self.netuid, commitments=False))
        if graph is None:  # the SDK's answer for a netuid that names no subnet
            raise ChainRefusedError(f"netuid {self.netuid} does not exist on subtensor {self.network!r}")
        return [Neuron(int(n.uid), str(n.hotkey), bool(n.validator_permit)) for n in graph.neurons]

    def preflight(self, keypair, *, validator: bool = False) -> int:
        """The subnet exists and the hotkey holds a uid on it; a validator's weights would be taken:
        the subnet's WeightsVersionKey is not above this protocol and the uid holds a validator
        permit. ChainRefusedError (one line, what to do) otherwise."""
        neurons = self.neurons()  # ChainRefusedError for a missing subnet
        me = next((n for n in neurons if n.hotkey == keypair.ss58_address), None)
        if me is None:
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} is not registered on netuid {self.netuid} "
                                    f"({self.name}): register it first (`rollproof miner register`)")
        if validator:
            self._check_version_key()
            if not me.validator_permit:
                raise ChainRefusedError(
                    f"hotkey {keypair.ss58_address} holds uid {me.uid} on netuid {self.netuid} but no validator "
                    f"permit: subtensor grants permits each epoch to the {self.max_validators()} neurons with the "
                    f"most stake; stake to this hotkey (`btcli stake add`) and start after the next epoch")
        return me.uid

    def max_validators(self) -> int:
        import bittensor as bt

        return int(self._read("MaxAllowedValidators", lambda: self.sub.query(
            bt.storage.SubtensorModule.MaxAllowedValidators, [self.netuid])) or 0)

    def _check_version_key(self) -> None:
        required = self.weights_version_key()
        if required > PROTOCOL_VERSION:
            raise ChainRefusedError(f"netuid {self.netuid} takes weights of version {required} or later "
                                    f"(WeightsVersionKey); this validator speaks protocol {PROTOCOL_VERSION}: "
                                    f"upgrade rollproof")

    def burn_cost(self) -> int:
        """The subnet's current registration burn, in rao (it moves with every registration)."""
        value = self._read("the registration burn", lambda: self.sub.subnets.burn(self.netuid))
        return int(getattr(value, "rao", value))

    def weights_version_key(self) -> int:
        """The subnet's WeightsVersionKey: subtensor refuses weights with a lower version_key."""
        import bittensor as bt

        return int(self._read("WeightsVersionKey", lambda: self.sub.query(
            bt.storage.SubtensorModule.WeightsVersionKey, [self.netuid])) or 0)

    def commitments(self, window: int) -> list[CommitmentRecord]:
        import bittensor as bt

        # subtensor keeps only a hotkey's latest commitment: read the state as of the window's last block
        at = min(window_deadline_block(window) - 1, self.current_block())
        rows = self._read("commitments",
                          lambda: self.sub.query_map(bt.storage.Commitments.CommitmentOf, [self.netuid], block=at))
        uids = {n.hotkey: n.uid for n in self.neurons()}
        out = []
        for hotkey, record in rows or []:
            hotkey = str(hotkey)
            if hotkey not in uids or not isinstance(record, dict):
                continue
            block = int(record.get("block") or 0)
            data = record_bytes(record)
            if window_of_block(block) != window:
                continue
            try:
                if decode_commitment(data).window != window:
                    continue
            except CommitmentFormatError:
                continue
            out.append(CommitmentRecord(uids[hotkey], hotkey, window, block, data))
        return out

    def weights_window(self, validator_uid: int) -> int | None:
        return None  # the validator's state directory tracks which windows it set

    def weights_ready(self, validator_uid: int) -> bool:
        """WeightsSetRateLimit blocks must pass since the validator's LastUpdate (subtensor refuses
        earlier sets); with windows shorter than the limit most windows are skipped and their scores
        are summed into the next set."""
        import bittensor as bt

        st = bt.storage.SubtensorModule
        limit = int(self._read("the weights rate limit", lambda: self.sub.query(st.WeightsSetRateLimit, [self.netuid])) or 0)
        last = self._read("LastUpdate", lambda: self.sub.query(st.LastUpdate, [self.netuid])) or []
        if limit == 0 or validator_uid >= len(last) or int(last[validator_uid]) == 0:
            return True
        return self.current_block() - int(last[validator_uid]) >= limit

    def weights(self, validator_uid: int) -> dict[int, int]:
        import bittensor as bt

        rows = self._read("weights", lambda: self.sub.query(bt.storage.SubtensorModule.Weights,
                                                           [self.netuid, validator_uid]))
        return {int(d): int(v) for d, v in (rows or [])}

    def prepare_ledger(self, keypair) -> int | None:
        """Register the validator's hotkey in the ledger's EVM registry (once) and check that it holds
        a permit there, so a missing permit stops the validator at start, not after its first window.
        Returns the EVM-registry uid, or None without a ledger."""
        if self.ledger is None:
            return None
        uid = self.ledger.register(keypair)
        if not self.ledger.validator_permit(uid):
            raise ChainError(f"hotkey {keypair.ss58_address} holds uid {uid} in the ledger's EVM registry but no "
                             f"validator permit: the deployer grants it with `rollproof chain permit {uid} "
                             f"--rpc-url … --registry … --ledger … --admin-key …`")
        return uid

    # ---- checkpoints ------------------------------------------------------------------------
    # With a ledger, announced in the SubnetRegistry on the subtensor's EVM (whose block numbers are
    # subtensor's, so the window rule reads the same blocks); without, in the announcer's commitment.
    def announcer_hotkey(self) -> str | None:
        """The hotkey whose commitment carries checkpoint announcements (and whose key signs their
        manifests): the configured hotkey, the hotkey of the configured uid (read once), or the
        subnet owner's hotkey as of the finalized head. None: the subnet has no owner hotkey and
        none is configured, so nothing announces checkpoints (every window uses the base model)."""
        import bittensor as bt

        if isinstance(self.announcer, str):
            return self.announcer
        if isinstance(self.announcer, int):
            if self._announcer_of_uid is None:
                hotkey = next((n.hotkey for n in self.neurons() if n.uid == self.announcer), None)
                if hotkey is None:
                    raise ChainRefusedError(f"the announcer uid {self.announcer} holds no hotkey on netuid {self.netuid}")
                self._announcer_of_uid = hotkey
            return self._announcer_of_uid
        final = self.finalized_block()
        owner = self._read("the subnet owner's hotkey", lambda: self.sub.query(
            bt.storage.SubtensorModule.SubnetOwnerHotkey, [self.netuid], block=final))
        if not owner or str(owner) == ZERO_ACCOUNT:
            self.neurons()  # a missing subnet says so
            return None
        return str(owner)

    def _commitment_at(self, hotkey: str, block: int):
        """(landed block, bytes) of hotkey's commitment in the state of `block`, or None."""
        import bittensor as bt

        try:
            record = self._read(f"the commitment of {hotkey} at block {block}", lambda: self.sub.query(
                bt.storage.Commitments.CommitmentOf, [self.netuid, hotkey], block=block))
        except ChainError as exc:
            if block < self.current_block() - PRUNED_STATE_BLOCKS:
                raise ChainError(f"{exc} (the state of block {block} is older than a pruning node keeps: "
                                 f"reading it needs an archive node, e.g. --network archive)") from exc
            raise
        if not isinstance(record, dict):
            return None
        return int(record.get("block") or 0), record_bytes(record)

    def checkpoint_announcements(self) -> list[Announcement]:
        """With a ledger, every announcement in its registry. Without, the announcer's valid
        announcements that landed in the last ANNOUNCEMENT_LOOKBACK_BLOCKS finalized blocks and the
        newest one before them, oldest first: enough for checkpoint_for(w, ·) to give the rule's
        answer for every window w from window_of_block(finalized - lookback) + ACTIVATION_WINDOWS
        on (announcement_in_force gives it for any window)."""
        if self.ledger is not None:
            return self.ledger.checkpoint_announcements()
        announcer = self.announcer_hotkey()
        if announcer is None:
            return []
        final = self.finalized_block()
        return self._announcements.recent(announcer, final, final - ANNOUNCEMENT_LOOKBACK_BLOCKS)

    def announcement_in_force(self, window: int) -> Announcement | None:
        """The checkpoint announcement in force for `window` (None: the base model), by the rule of
        verification/announcement.py: the announcer's commitment in the state of the last block of
        window - ACTIVATION_WINDOWS, walked back past commitments that are not valid announcements.
        ChainError until that block is finalized."""
        return next(self.announcement_candidates(window), None)

    def announcement_candidates(self, window: int) -> Iterator[Announcement]:
        """Every valid announcement that may be in force for `window`, newest first: the resolver
        walks past the ones whose checkpoint is invalid (docs/protocol.md section 15). ChainError
        until the deciding block is finalized."""
        if self.ledger is not None:
            yield from self.ledger.announcement_candidates(window)
            return
        at = announcement_state_block(window)
        if at is not None and (final := self.finalized_block()) < at:
            raise ChainError(f"the checkpoint of window {window} is decided by block {at}, not finalized yet "
                             f"(finalized {final})")
        announcer = self.announcer_hotkey()
        if announcer is not None:
            yield from self._announcements.candidates(announcer, window)

    def trainer_hotkey(self) -> str | None:
        return self.ledger.trainer_hotkey() if self.ledger is not None else self.announcer_hotkey()

    def announce_checkpoint(self, keypair, from_window: int, fingerprint: bytes, manifest_hash: bytes,
                            location: str) -> None:
        """With a ledger, in its registry. Without, as the announcer's commitment, which must land in
        window from_window - ACTIVATION_WINDOWS (readers ignore it otherwise): checked before sending
        and again once it is finalized."""
        if self.ledger is not None:
            self.ledger.announce_checkpoint(keypair, from_window, fingerprint, manifest_hash, location)
            return
        import bittensor as bt

        announcer = self.announcer_hotkey()
        if announcer is None:
            raise ChainRefusedError(f"netuid {self.netuid} has no owner hotkey on subtensor {self.network!r}: name "
                                    f"the checkpoint announcer (--announcer HOTKEY_OR_UID) on every node")
        if keypair.ss58_address != announcer:
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} is not the checkpoint announcer of netuid "
                                    f"{self.netuid} ({announcer}: the subnet owner's hotkey unless --announcer names "
                                    f"another); only its commitments announce checkpoints")
        try:
            data = encode_announcement(self.netuid, from_window, fingerprint, manifest_hash, location)
        except CheckpointError as exc:
            raise ChainRefusedError(f"checkpoint announcement for window {from_window}: {exc} (a base of at most "
                                    f"{MAX_ANNOUNCEMENT_BASE_BYTES} bytes: a shorter --public-url or store prefix)") from None
        landing = window_of_block(self.current_block() + 1)
        if from_window != landing + ACTIVATION_WINDOWS:
            raise ChainError(f"a checkpoint announcement for window {from_window} would land in window {landing}: "
                             f"on subtensor it must land in window {from_window - ACTIVATION_WINDOWS} exactly")
        call = bt.calls.Commitments.set_commitment(netuid=self.netuid, info={"fields": [commitment_fields(data)]})
        self._submit(f"checkpoint announcement for window {from_window}",
                     lambda: self.sub.submit_call(call, self._wallet(), signer="hotkey"))
        record = self._commitment_at(announcer, self.finalized_block())
        if record is None or record[1] != data:
            raise ChainError(f"checkpoint announcement for window {from_window} went through but the announcer's "
                             f"finalized commitment is not it")
        if not valid_on_subtensor(from_window, record[0]):
            raise ChainError(f"checkpoint announcement for window {from_window} landed in block {record[0]} (window "
                             f"{window_of_block(record[0])}), too late: readers ignore it")

    def ledger_entry(self, validator_uid: int, window: int) -> LedgerEntry | None:
        if self.ledger is None:
            return self._local_ledger.get((validator_uid, window))
        hotkey = next((n.hotkey for n in self.neurons() if n.uid == validator_uid), None)
        ledger_uid = self.ledger.uid_of(hotkey) if hotkey is not None else None
        if ledger_uid is None:
            return None
        entry = self.ledger.ledger_entry(ledger_uid, window)
        # the entry is the subtensor validator's: report its subtensor uid, not its EVM-registry uid
        return None if entry is None else replace(entry, validator_uid=validator_uid)

    # ---- writing ------------------------------------------------------------------------------
    def _wallet(self):
        if self.wallet is None:
            raise ChainError("writing to subtensor needs a wallet (--wallet.name/--wallet.hotkey)")
        return self.wallet

    def _refusal(self, what: str, name: str | None, detail: str) -> ChainError:
        cls = ChainRefusedError if name in REFUSED_NAMES else ChainError
        return cls(f"{what} refused by subtensor {self.network!r}: {name + ': ' if name else ''}{detail}")

    def _submit(self, what: str, fn):
        try:
            result = fn()
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own types (ChainError, PolicyError, ...)
            name = error_name(exc)
            err = self._refusal(what, name, f"{type(exc).__name__}: {exc}") if name else \
                ChainError(f"{what} failed on subtensor {self.network!r}: {type(exc).__name__}: {exc}")
            raise err from exc
        if result is not None and getattr(result, "success", True) is False:
            raise self._refusal(what, error_name(result), str(getattr(result, "message", "") or result))
        return result

    def register(self, keypair, *, max_burn_rao: int | None = None) -> int:
        """Burned registration paid by the wallet's coldkey (the SDK routes it through the MEV
        shield). With max_burn_rao, the burn is read just before paying and a higher one is
        refused (ChainRefusedError) without sending anything."""
        import bittensor as bt

        existing = self.uid_of(keypair.ss58_address)
        if existing is not None:
            return existing
        if max_burn_rao is not None:
            burn = self.burn_cost()
            if burn > max_burn_rao:
                raise ChainRefusedError(f"registration on netuid {self.netuid} costs {tao(burn)} now, above the "
                                        f"maximum {tao(max_burn_rao)} (--max-burn): nothing was paid")
        self._submit("burned register",
                     lambda: self.sub.execute(bt.BurnedRegister(netuid=self.netuid, hotkey_ss58=keypair.ss58_address),
                                              self._wallet()))
        uid = self.uid_of(keypair.ss58_address)
        if uid is None:
            raise ChainError("burned registration went through but the hotkey has no uid yet")
        return uid

    def commit(self, keypair, window: int, data: bytes) -> None:
        import bittensor as bt

        if len(data) > MAX_COMMITMENT_BYTES:
            # over the budget every window of a tempo fits in (docs/protocol.md section 12)
            raise ChainRefusedError(
                f"commitment for window {window} is {len(data)} bytes, over the {MAX_COMMITMENT_BYTES} bytes a "
                f"subtensor commitment may take each window: commit a base of at most {MAX_BASE_BYTES} bytes "
                f"(a shorter --public-url or store prefix)")
        info = {"fields": [commitment_fields(data)]}
        call = bt.calls.Commitments.set_commitment(netuid=self.netuid, info=info)
        self._submit(f"commitment for window {window}",
                     lambda: self.sub.submit_call(call, self._wallet(), signer="hotkey"))

    def weights_intent(self, uids: list[int], weights: list[int]):
        """The SDK intent set_weights executes: this protocol's version as version_key, refused
        here (ChainRefusedError) when the subnet's WeightsVersionKey asks for a newer one."""
        import bittensor as bt

        pairs = [(int(u), float(w)) for u, w in zip(uids, weights) if w > 0]
        if not pairs:
            raise ChainError("refusing to set all-zero weights")
        self._check_version_key()
        return bt.SetWeights(netuid=self.netuid, uids=[u for u, _ in pairs], weights=[w for _, w in pairs],
                             version_key=PROTOCOL_VERSION)

    def runtime_surface(self) -> RuntimeSurface | None:
        """SubtensorModule's calls and storage as the connected runtime's metadata declares them,
        read once per connection (None: the SDK client does not expose its metadata)."""
        if self._surface is None:
            self._surface = (self._read("the runtime metadata", lambda: read_runtime_surface(self.sub)),)
        return self._surface[0]

    def weights_route(self) -> WeightsRoute:
        """How a weight set runs on the connected runtime now: the SDK's intent, the runtime's own
        set_weights, or none (with the one-line reason); subtensor_weights.choose_weights_route."""
        import bittensor as bt

        surface = self.runtime_surface()
        commit_reveal = False
        if surface is None or "CommitRevealWeightsEnabled" in surface.storage:
            commit_reveal = bool(self._read("CommitRevealWeightsEnabled", lambda: self.sub.query(
                bt.storage.SubtensorModule.CommitRevealWeightsEnabled, [self.netuid])))
        return choose_weights_route(surface, commit_reveal)

    def set_weights(self, keypair, window: int, uids: list[int], weights: list[int]) -> None:
        """Through the SDK's intent where the runtime can run it; else the runtime's own weights
        call; else WeightsUnavailableError (nothing sent). weights_route says which."""
        intent = self.weights_intent(uids, weights)
        what = f"weights for window {window}"
        route = self.weights_route()
        if route.kind == "none":
            raise WeightsUnavailableError(f"{what}: {route.reason}")
        if route.kind == "sdk":
            # through this chain's own client (bt.set_weights would open a second, shared one)
            self._submit(what, lambda: self.sub.execute(intent, self._wallet()))
            return
        call = self.legacy_weights_call(keypair, intent.uids, intent.weights)
        self._submit(f"{what} ({LEGACY_CALL})", lambda: self.sub.submit_call(call, self._wallet(), signer="hotkey"))

    def legacy_weights_call(self, keypair, uids: list[int], weights: list[float]):
        """SubtensorModule.set_weights with the weights the SDK's intent would send (clipped to
        MaxWeightsLimit, u16) and its version key (this protocol's)."""
        import bittensor as bt

        limit = self._read("MaxWeightsLimit", lambda: self.sub.query(
            bt.storage.SubtensorModule.MaxWeightsLimit, [self.netuid]))
        me = self.uid_of(keypair.ss58_address) if len(uids) == 1 else None  # a lone self-weight is not clipped
        dests, values = conform_weights(uids, weights, me, U16_MAX if limit is None else int(limit))
        return bt.calls.SubtensorModule.set_weights(netuid=self.netuid, dests=dests, weights=values,
                                                    version_key=PROTOCOL_VERSION)

    def record_scores(self, keypair, window: int, uids: list[int], scores: list[int],
                      verified_root: bytes, report_hash: bytes) -> None:
        if self.ledger is not None:
            self.ledger.register(keypair)  # idempotent: returns the existing EVM-registry uid
            self.ledger.record_scores(keypair, window, uids, scores, verified_root, report_hash)
            return
        validator_uid = self.uid_of(keypair.ss58_address)
        self._local_ledger[(validator_uid, window)] = LedgerEntry(
            validator_uid, window, tuple(uids), tuple(scores), verified_root, report_hash, self.current_block())
