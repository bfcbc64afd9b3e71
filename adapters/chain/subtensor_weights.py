"""Which weights call the connected subtensor runtime can run, decided from its metadata.

The bittensor SDK's `SetWeights` intent (11.3.0, bittensor/intents/weights.py) is generated from the
newest runtime: its pre-check reads SDK_PREFLIGHT_STORAGE and it sends `set_mechanism_weights`, or
with commit-reveal on `commit_timelocked_mechanism_weights` after reading SDK_TIMELOCK_STORAGE.
An older runtime (the spec-293 runtime of tests/test_subtensor_live.py) lacks `SubnetEpochConsensus`
and both calls, but still has the legacy `SubtensorModule.set_weights(netuid, dests, weights,
version_key)`. The route is chosen once per runtime version from what its metadata declares
(never by matching an error text):

  sdk      the SDK's intent (clip, u16 quantize, plain or timelocked commit chosen by the SDK)
  legacy   commit-reveal off and the SDK's plain path cannot run: the runtime's own set_weights,
           composed through the SDK (bittensor.calls), signed by the hotkey, with the weights
           conformed as the SDK's intent would (max-weight clip, max-upscaled u16)
  none     no call the runtime has can take these weights; `reason` says why in one line

The metadata is read through the SDK client's transport (SubstrateConnection.metadata_ir, the
codec the SDK already holds for the runtime: no extra request); a client without it (another SDK
version) is taken to run the SDK's intent, as before this module."""

from __future__ import annotations

from dataclasses import dataclass

PALLET = "SubtensorModule"
# Storage the SDK's SetWeights pre-check reads (intents/weights.py _preflight): missing one, the
# intent fails before it signs anything ("storage function ... not found").
SDK_PREFLIGHT_STORAGE = ("Uids", "CommitRevealWeightsEnabled", "WeightsSetRateLimit", "LastUpdate",
                         "MinAllowedWeights", "MaxWeightsLimit", "SubnetEpochConsensus")
# Storage the SDK's timelocked commit reads (intents/weights.py _build_timelocked)
SDK_TIMELOCK_STORAGE = ("Tempo", "RevealPeriodEpochs", "LastEpochBlock", "PendingEpochAt", "SubnetEpochIndex",
                        "BlocksSinceLastStep")
SDK_SET_CALL = "set_mechanism_weights"
SDK_COMMIT_CALL = "commit_timelocked_mechanism_weights"
# The runtime's own weights call and the arguments this adapter composes it with
LEGACY_CALL = "set_weights"
LEGACY_ARGS = ("netuid", "dests", "weights", "version_key")
U16_MAX = 65535


@dataclass(frozen=True)
class RuntimeSurface:
    """What the runtime's metadata declares for SubtensorModule: call names with their argument
    names, and storage names."""

    spec_version: int
    calls: dict[str, tuple[str, ...]]
    storage: frozenset[str]


@dataclass(frozen=True)
class WeightsRoute:
    kind: str  # "sdk", "legacy" or "none"
    reason: str  # why this route (for "none": why no weight can be set), one line


def surface_from_metadata(metadata) -> RuntimeSurface:
    """RuntimeSurface of a metadata IR (objects with .spec_version and .pallets, each pallet with
    .name, .calls [.name, .args [.name]] and .storage [.name])."""
    pallet = next((p for p in metadata.pallets if p.name == PALLET), None)
    if pallet is None:
        return RuntimeSurface(int(metadata.spec_version), {}, frozenset())
    calls = {c.name: tuple(a.name for a in c.args) for c in pallet.calls}
    return RuntimeSurface(int(metadata.spec_version), calls, frozenset(s.name for s in pallet.storage))


def read_runtime_surface(sub) -> RuntimeSurface | None:
    """The connected runtime's surface, from the metadata the SDK client already decoded; None when
    the client does not expose it (see the module docstring). A stand-in may offer metadata_ir()."""
    if hasattr(sub, "metadata_ir"):
        return surface_from_metadata(sub.metadata_ir())
    client = getattr(sub, "_client", None)
    substrate = getattr(client, "_substrate", None)
    run = getattr(sub, "_call", None)
    if client is None or substrate is None or run is None or not hasattr(client, "connect"):
        return None

    async def metadata():
        await client.connect()  # the SDK connects on first use
        raw = getattr(substrate, "raw", None)
        return None if raw is None or not hasattr(raw, "metadata_ir") else await raw.metadata_ir()

    ir = run(metadata())
    return None if ir is None else surface_from_metadata(ir)


def choose_weights_route(surface: RuntimeSurface | None, commit_reveal: bool) -> WeightsRoute:
    """The route for one weight set on `surface` with the subnet's CommitRevealWeightsEnabled."""
    if surface is None:
        return WeightsRoute("sdk", "the SDK client does not expose the runtime's metadata")
    spec = f"subtensor runtime spec {surface.spec_version}"
    missing = [s for s in SDK_PREFLIGHT_STORAGE if s not in surface.storage]
    if commit_reveal:
        missing += [s for s in SDK_TIMELOCK_STORAGE if s not in surface.storage]
        if SDK_COMMIT_CALL not in surface.calls:
            missing.append(f"call {SDK_COMMIT_CALL}")
        if not missing:
            return WeightsRoute("sdk", f"{spec}: the SDK's timelocked commit")
        return WeightsRoute("none", f"the subnet runs commit-reveal (CommitRevealWeightsEnabled) and {spec} lacks "
                                    f"what the SDK's timelocked commit needs ({', '.join(missing)}): no weight can "
                                    f"be set until the subnet owner turns commit-reveal off or the runtime is upgraded")
    if SDK_SET_CALL not in surface.calls:
        missing.append(f"call {SDK_SET_CALL}")
    if not missing:
        return WeightsRoute("sdk", f"{spec}: the SDK's set_mechanism_weights")
    if surface.calls.get(LEGACY_CALL) == LEGACY_ARGS:
        return WeightsRoute("legacy", f"{spec} lacks {', '.join(missing)} (the SDK's SetWeights): the runtime's own "
                                      f"{PALLET}.{LEGACY_CALL}")
    return WeightsRoute("none", f"{spec} lacks {', '.join(missing)} (the SDK's SetWeights) and has no "
                                f"{PALLET}.{LEGACY_CALL}({', '.join(LEGACY_ARGS)}): no weight can be set")


def conform_weights(uids: list[int], weights: list[float], my_uid: int | None,
                    max_weight_limit: int) -> tuple[list[int], list[int]]:
    """The (uids, u16 values) the SDK's intent would send: clipped to the subnet's MaxWeightsLimit
    (a lone self-weight is exempt, as on chain), max-upscaled and quantized, zeros dropped. Uses the
    SDK's own clip_to_max_weight and normalize."""
    from bittensor.intents.weights import clip_to_max_weight, normalize

    floats = [float(w) for w in weights]
    if uids != [my_uid] and max_weight_limit < U16_MAX:
        floats = clip_to_max_weight(floats, max_weight_limit / U16_MAX)
    return normalize(uids, floats)
