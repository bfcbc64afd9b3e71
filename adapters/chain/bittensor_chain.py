"""The Bittensor subtensor through the bittensor 11.3.0 SDK.

Mapping of the chain interface:
  current_block / block       Subtensor.block, Subtensor.block_info(n) (hash, timestamp)
  neurons                     Subtensor.subnets.metagraph(netuid).neurons (uid, hotkey, permit)
  register                    Subtensor.execute(bt.BurnedRegister(netuid), wallet)
  commit / commitments        Commitments.set_commitment with Raw fields (submit_call, signer
                              hotkey) / query_map(Commitments.CommitmentOf, [netuid])
  set_weights                 bt.set_weights (clip, u16 quantize, commit-reveal chosen by the SDK)
  record_scores / ledger      not on subtensor itself: with --ledger-rpc-url, the ScoreLedger
                              contract on the subtensor's EVM (chain id 945/964; its block numbers
                              are subtensor's, so windows agree), where the validator's hotkey holds
                              an EVM-registry uid with a permit; without it, this process's memory
                              (the report stays in the validator's state directory).

Subtensor keeps only a hotkey's latest commitment; the commitment bytes carry their window, and a
record counts for window w only if it landed in w's blocks."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from adapters.chain.base import BlockInfo, Chain, CommitmentRecord, LedgerEntry, Neuron
from verification.challenge import window_deadline_block, window_of_block
from verification.commitment import decode_commitment
from verification.errors import ChainError, CommitmentFormatError

RAW_FIELD_BYTES = 128  # the Commitments pallet's largest Raw variant
MAX_FIELDS = 3


def commitment_fields(data: bytes) -> list[dict]:
    """Split bytes into the pallet's Raw<N> fields (at most MAX_FIELDS of RAW_FIELD_BYTES)."""
    chunks = [data[i:i + RAW_FIELD_BYTES] for i in range(0, len(data), RAW_FIELD_BYTES)] or [b""]
    if len(chunks) > MAX_FIELDS:
        raise ChainError(f"commitment of {len(data)} bytes exceeds {MAX_FIELDS} x {RAW_FIELD_BYTES}")
    return [{f"Raw{len(c)}": "0x" + c.hex()} for c in chunks]


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


class BittensorChain(Chain):
    name = "bittensor"

    def __init__(self, network: str, netuid: int, *, wallet=None, subtensor=None, ledger: Chain | None = None):
        self.network = network
        self.netuid = netuid
        self.wallet = wallet
        self._sub = subtensor
        self.ledger = ledger  # an EVMChain running the rollproof contracts on the subtensor's EVM
        self._local_ledger: dict[tuple[int, int], LedgerEntry] = {}

    @property
    def sub(self):
        if self._sub is None:
            import bittensor as bt

            try:
                self._sub = bt.Subtensor(self.network)
            except Exception as exc:  # the SDK raises its own error types for unreachable endpoints
                raise ChainError(f"cannot connect to subtensor {self.network!r}: {exc}") from exc
        return self._sub

    def _read(self, what: str, fn):
        try:
            return fn()
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes a typed ChainError
            raise ChainError(f"cannot read {what} from subtensor {self.network!r}: {exc}") from exc

    def current_block(self) -> int:
        return int(self._read("the block number", lambda: self.sub.block))

    def block(self, number: int) -> BlockInfo:
        info = self._read(f"block {number}", lambda: self.sub.block_info(number))
        if info is None or not info.hash:
            raise ChainError(f"block {number} does not exist yet")
        ts = info.timestamp
        seconds = int(ts.timestamp()) if isinstance(ts, datetime) else int(ts)
        return BlockInfo(int(info.number), bytes.fromhex(str(info.hash).removeprefix("0x")), seconds)

    def neurons(self) -> list[Neuron]:
        graph = self._read("the metagraph", lambda: self.sub.subnets.metagraph(self.netuid))
        return [Neuron(int(n.uid), str(n.hotkey), bool(n.validator_permit)) for n in graph.neurons]

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
            data = fields_bytes(list((record.get("info") or {}).get("fields") or []))
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

    # checkpoints: announced in the SubnetRegistry on the subtensor's EVM (--ledger-rpc-url), whose
    # block numbers are subtensor's, so the window rule reads the same blocks
    def checkpoint_announcements(self):
        return self.ledger.checkpoint_announcements() if self.ledger is not None else []

    def trainer_hotkey(self) -> str | None:
        return self.ledger.trainer_hotkey() if self.ledger is not None else None

    def announce_checkpoint(self, keypair, from_window: int, fingerprint: bytes, manifest_hash: bytes,
                            location: str) -> None:
        if self.ledger is None:
            raise ChainError("announcing checkpoints on Bittensor needs the registry on the subtensor EVM "
                             "(--ledger-rpc-url, --registry, --ledger, --evm-key)")
        self.ledger.announce_checkpoint(keypair, from_window, fingerprint, manifest_hash, location)

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

    def _submit(self, what: str, fn):
        try:
            result = fn()
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{what} failed on subtensor {self.network!r}: {exc}") from exc
        if result is not None and getattr(result, "success", True) is False:
            raise ChainError(f"{what} failed on subtensor {self.network!r}: {getattr(result, 'message', result)}")
        return result

    def register(self, keypair) -> int:
        import bittensor as bt

        existing = self.uid_of(keypair.ss58_address)
        if existing is not None:
            return existing
        self._submit("burned register",
                     lambda: self.sub.execute(bt.BurnedRegister(netuid=self.netuid, hotkey_ss58=keypair.ss58_address),
                                              self._wallet()))
        uid = self.uid_of(keypair.ss58_address)
        if uid is None:
            raise ChainError("burned registration went through but the hotkey has no uid yet")
        return uid

    def commit(self, keypair, window: int, data: bytes) -> None:
        import bittensor as bt

        info = {"fields": [commitment_fields(data)]}
        call = bt.calls.Commitments.set_commitment(netuid=self.netuid, info=info)
        self._submit(f"commitment for window {window}",
                     lambda: self.sub.submit_call(call, self._wallet(), signer="hotkey"))

    def set_weights(self, keypair, window: int, uids: list[int], weights: list[int]) -> None:
        import bittensor as bt

        pairs = {int(u): float(w) for u, w in zip(uids, weights) if w > 0}
        if not pairs:
            raise ChainError("refusing to set all-zero weights")
        self._submit(f"weights for window {window}",
                     lambda: bt.set_weights(self.netuid, pairs, wallet=self._wallet(), network=self.network))

    def record_scores(self, keypair, window: int, uids: list[int], scores: list[int],
                      verified_root: bytes, report_hash: bytes) -> None:
        if self.ledger is not None:
            self.ledger.register(keypair)  # idempotent: returns the existing EVM-registry uid
            self.ledger.record_scores(keypair, window, uids, scores, verified_root, report_hash)
            return
        validator_uid = self.uid_of(keypair.ss58_address)
        self._local_ledger[(validator_uid, window)] = LedgerEntry(
            validator_uid, window, tuple(uids), tuple(scores), verified_root, report_hash, self.current_block())
