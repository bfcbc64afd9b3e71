"""Typed errors of the protocol. Every rejection carries a machine-readable reason code."""

from __future__ import annotations


class RollproofError(Exception):
    """Base of every error this project raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class BundleFormatError(RollproofError):
    """The bundle bytes are malformed, truncated, of the wrong version or over a size limit."""

    code = "bundle_format"


class BundleTooLargeError(BundleFormatError):
    code = "bundle_too_large"


class SignatureError(RollproofError):
    """A signature does not verify against the claimed key."""

    code = "bad_signature"


class BeaconError(RollproofError):
    """A drand beacon does not verify, names the wrong round or chain, or cannot be had."""

    code = "bad_beacon"


class BeaconUnavailableError(BeaconError):
    """No relay could serve the requested round (network failure, every relay down)."""

    code = "beacon_unavailable"


class WindowBeforeBeaconError(BeaconError):
    """The window's start block is older than the drand chain's genesis (a fresh chain's block 0
    has timestamp 0), so no beacon round pins its problems: the window can be neither mined nor
    verified. Nodes skip the window; it is not a beacon outage and retrying cannot help."""

    code = "window_before_beacon"


class ModelError(RollproofError):
    """A model cannot be loaded, or its fingerprint is not the one required."""

    code = "model"


class EnvironmentSpecError(RollproofError):
    """Unknown environment or an environment instance that cannot be rebuilt."""

    code = "environment"


class TaskLibraryError(EnvironmentSpecError):
    """A library-backed environment (docs/protocol.md section 8, "Library-backed environments") cannot
    make the protocol's problems here: reasoning-gym is missing or at another version, a generator
    file's SHA-256 differs from the pinned one, or a pinned self-check item regenerates differently.
    Raised when generation params naming such an environment are checked, before any window; the
    message names the install command. Never a silent change of the task."""

    code = "task_library"


class ConfigError(RollproofError):
    code = "config"


class ChainError(RollproofError):
    """The chain (EVM or subtensor) cannot be reached or refused a call."""

    code = "chain"


class ChainRefusedError(ChainError):
    """The chain refuses this node for good until an operator acts: the hotkey is not registered,
    holds no validator permit, or the EVM key is not the account that owns its uid. Nodes do not
    retry it (a transient ChainError they retry for as long as it lasts)."""

    code = "chain_refused"


class WeightsUnavailableError(ChainError):
    """The connected chain's runtime has no call that can take this subnet's weights now (e.g.
    commit-reveal on, and the runtime lacks the commit the SDK sends). Nothing was sent; a
    validator logs the reason once per window and keeps scoring (its scores count in the next set
    that lands), instead of retrying a write that cannot succeed."""

    code = "weights_unavailable"


class StorageError(RollproofError):
    """Bundle storage cannot be reached, or the object is missing or too large."""

    code = "storage"


class CommitmentFormatError(RollproofError):
    """An on-chain commitment is not a well-formed rollproof commitment."""

    code = "bad_commitment"


class CheckpointError(RollproofError):
    """A checkpoint cannot be used. Raised as such (the window is skipped) or as one of its two
    kinds below, which docs/protocol.md section 15 treats differently."""

    code = "bad_checkpoint"


class CheckpointUnavailableError(CheckpointError):
    """This node could not get the checkpoint's bytes: a fetch failed or timed out, or the bytes it
    got do not hash to what the chain (or the manifest) states. Another node may get them, so this
    is the node's own problem and no consensus rule: the node skips the window and logs it."""

    code = "checkpoint_unavailable"


class CheckpointInvalidError(CheckpointError):
    """The checkpoint fails a check that is a function of bytes bound on chain alone (the manifest
    whose SHA-256 the announcement holds, and the files whose SHA-256 that manifest holds): a
    malformed manifest, a wrong signature or trainer, a fingerprint, window or base that differs, an
    adapter whose weights root or fingerprint disagrees. Every node reaches the same verdict, so the
    announcement is void and the previous valid checkpoint stays in force (section 15)."""

    code = "checkpoint_invalid"


class TrainingRecordError(CheckpointInvalidError):
    """A checkpoint's training record (section 16) is malformed, names another parent or checkpoint,
    or lacks what a replay needs: bytes bound by the trainer's signature, so the checkpoint is void."""

    code = "training_record"


class ReplayMismatchError(CheckpointInvalidError):
    """Re-running a checkpoint's training record does not give the checkpoint: a row not under its
    report's verified_root, a step whose outcome differs, a gate the candidate does not pass, or an
    adapter or optimizer state beyond the replay tolerance. `step` is the record event that failed."""

    code = "replay_mismatch"

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message if step is None else f"event {step}: {message}")
        self.step = step


class EngineError(RollproofError):
    """A generation engine cannot run as configured: not installed, a model or device it cannot
    take, an option that does not fit. The CLI prints it and exits 2 before any window is mined."""


class EngineProtocolError(EngineError):
    """An engine produced a rollout the protocol does not: a token other than the seeded Gumbel-max
    winner, a position with no proof, a stop the protocol does not make. The miner signs nothing
    from that generation; the window is journaled and logged as missed."""


class TelemetryBindError(RollproofError):
    """The metrics or status-page server cannot listen where the operator asked: the port is in use,
    privileged (below 1024) for this user, or out of range, or the host does not resolve or is not
    an address of this machine. Raised at start, before the node does any work; the CLI prints it
    as one line and exits 2. `part` says which is at fault, "host" or "port", of `host` and `port`."""

    code = "telemetry_bind"

    def __init__(self, message: str, *, part: str, host: str = "", port: int | None = None):
        super().__init__(message)
        self.part = part
        self.host = host
        self.port = port


class GenerationAborted(RollproofError):
    """Generation was stopped before it finished (the window's commitment can no longer land)."""
