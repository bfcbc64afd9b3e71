"""Where beacons come from: HTTP relays (specific rounds only), the local seeded signer, and a cache
that only ever holds beacons that verified. Every path returns a verified Beacon or raises
BeaconError / BeaconUnavailableError: there is no fallback to local randomness."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from adapters.files import atomic_write
from verification.drand import Beacon, ChainInfo, verify_beacon
from verification.drand_local import LocalDrand
from verification.errors import BeaconError, BeaconUnavailableError
from verification.json_depth import loads_bounded

DEFAULT_RELAYS = (
    "https://api.drand.sh",
    "https://api2.drand.sh",
    "https://api3.drand.sh",
    "https://drand.cloudflare.com",
)
MAX_RELAY_RESPONSE = 16 * 1024
RELAY_JSON_DEPTH = 4  # a relay's reply is one flat object; deeper text is refused before parsing


class BeaconCache:
    """Verified beacons on disk, one JSON file per (chain, round). A round never changes once emitted,
    so a cached round is final; it is re-verified on every read all the same (about 2 ms)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, info: ChainInfo, round_number: int) -> Path:
        return self.root / info.chain_hash().hex() / f"{round_number}.json"

    def get(self, info: ChainInfo, round_number: int) -> Beacon | None:
        path = self._path(info, round_number)
        if not path.is_file():
            return None
        beacon = Beacon.from_json(json.loads(path.read_text()))
        verify_beacon(info, beacon, expected_round=round_number)
        return beacon

    def put(self, info: ChainInfo, beacon: Beacon) -> None:
        verify_beacon(info, beacon)
        self._store(info, beacon)

    def _store(self, info: ChainInfo, beacon: Beacon) -> None:
        """Write a beacon the caller has just verified against info."""
        atomic_write(self._path(info, beacon.round), json.dumps(beacon.to_json()).encode())


class BeaconSource:
    info: ChainInfo

    def fetch(self, round_number: int) -> Beacon:  # pragma: no cover - interface
        """Return round_number's beacon, verified against self.info, or raise BeaconError."""
        raise NotImplementedError

    def get(self, round_number: int, cache: BeaconCache | None = None) -> Beacon:
        """The verified beacon of round_number (from cache when present)."""
        if cache is not None:
            cached = cache.get(self.info, round_number)
            if cached is not None:
                return cached
        beacon = self.fetch(round_number)
        if cache is not None:
            cache._store(self.info, beacon)
        return beacon


class LocalBeaconSource(BeaconSource):
    """The embedded default: signs rounds with the local seeded key, refusing rounds not yet due."""

    def __init__(self, drand: LocalDrand | None = None, clock: Callable[[], float] = time.time):
        self.drand = drand or LocalDrand()
        self.info = self.drand.info
        self.clock = clock

    def fetch(self, round_number: int) -> Beacon:
        current = self.info.round_at(self.clock())
        if round_number > current:
            raise BeaconUnavailableError(f"round {round_number} is not emitted yet (current {current})")
        beacon = self.drand.sign(round_number)
        verify_beacon(self.info, beacon, expected_round=round_number)  # the same path as relayed beacons
        return beacon


class HttpRelaySource(BeaconSource):
    """drand HTTP relays, asked for `/{chain_hash}/public/{round}` in turn until one verifies."""

    def __init__(self, info: ChainInfo, relays: Sequence[str] = DEFAULT_RELAYS, timeout: float = 5.0,
                 opener: Callable | None = None):
        if not relays:
            raise BeaconError("at least one relay is needed")
        self.info = info
        self.relays = list(relays)
        self.timeout = timeout
        self._open = opener or urllib.request.urlopen

    def url(self, relay: str, round_number: int) -> str:
        return f"{relay.rstrip('/')}/{self.info.chain_hash().hex()}/public/{round_number}"

    def fetch(self, round_number: int) -> Beacon:
        errors = []
        for relay in self.relays:
            url = self.url(relay, round_number)
            try:
                with self._open(url, timeout=self.timeout) as resp:
                    raw = resp.read(MAX_RELAY_RESPONSE + 1)
                if len(raw) > MAX_RELAY_RESPONSE:
                    raise BeaconError("relay response too large")
                data = loads_bounded(raw, RELAY_JSON_DEPTH)
                beacon = Beacon(
                    chain_hash=self.info.chain_hash(),
                    round=int(data["round"]),
                    signature=bytes.fromhex(data["signature"]),
                    previous_signature=bytes.fromhex(data.get("previous_signature") or ""),
                )
                verify_beacon(self.info, beacon, expected_round=round_number)
                return beacon
            except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError, BeaconError) as exc:
                errors.append(f"{relay}: {type(exc).__name__}: {exc}")
        raise BeaconUnavailableError(f"no relay served a valid round {round_number}: " + "; ".join(errors))
