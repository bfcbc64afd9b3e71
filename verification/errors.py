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
    """A checkpoint cannot be used: bad manifest or signature, a file whose hash or size differs,
    a fingerprint that does not match, a checkpoint that cannot be fetched. The window is skipped;
    a node never falls back to another model."""

    code = "bad_checkpoint"
