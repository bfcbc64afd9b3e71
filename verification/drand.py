"""drand beacons: pinned chain parameters, signature verification for both schemes, round maths.

Pure: no network. Sources that fetch or sign beacons live in adapters/beacons.py and return
Beacon objects that must pass verify_beacon() before anything uses them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from py_arkworks_bls12381 import G1Point, G2Point, GT

from verification.errors import BeaconError

SCHEME_CHAINED_G2 = "pedersen-bls-chained"  # drand "default": pk in G1, sig in G2, chained
SCHEME_UNCHAINED_G1 = "bls-unchained-g1-rfc9380"  # drand "quicknet": pk in G2, sig in G1
DST_G1 = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
DST_G2 = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_"

_SIG_LEN = {SCHEME_CHAINED_G2: 96, SCHEME_UNCHAINED_G1: 48}
_PK_LEN = {SCHEME_CHAINED_G2: 48, SCHEME_UNCHAINED_G1: 96}


@dataclass(frozen=True)
class ChainInfo:
    """A drand chain's public parameters. chain_hash() recomputes the hash that identifies it."""

    name: str
    public_key: bytes
    period: int
    genesis_time: int
    group_hash: bytes
    scheme: str
    beacon_id: str = ""  # empty for drand "default", whose chain hash omits the id

    def __post_init__(self) -> None:
        if self.scheme not in _SIG_LEN:
            raise BeaconError(f"unknown drand scheme {self.scheme!r}")
        if len(self.public_key) != _PK_LEN[self.scheme]:
            raise BeaconError(f"public key of {len(self.public_key)} bytes does not fit {self.scheme}")
        if self.period <= 0:
            raise BeaconError("drand period must be positive")

    def chain_hash(self) -> bytes:
        data = (
            struct.pack(">I", self.period)
            + struct.pack(">q", self.genesis_time)
            + self.public_key
            + self.group_hash
        )
        if self.beacon_id and self.beacon_id != "default":
            data += self.beacon_id.encode()
        return hashlib.sha256(data).digest()

    # ---- round maths ------------------------------------------------------------------------
    def round_at(self, unix_time: float) -> int:
        """The round current at unix_time: floor((t - genesis)/period) + 1; 0 before genesis."""
        if unix_time < self.genesis_time:
            return 0
        return int((int(unix_time) - self.genesis_time) // self.period) + 1

    def time_of_round(self, round_number: int) -> int:
        """Unix time at which round_number is emitted."""
        if round_number < 1:
            raise BeaconError("drand rounds start at 1")
        return self.genesis_time + (round_number - 1) * self.period


@dataclass(frozen=True)
class Beacon:
    """One drand round as served by a relay: round, signature, and previous signature (chained)."""

    chain_hash: bytes
    round: int
    signature: bytes
    previous_signature: bytes = b""

    @property
    def randomness(self) -> bytes:
        return hashlib.sha256(self.signature).digest()

    def to_json(self) -> dict:
        out = {"chain_hash": self.chain_hash.hex(), "round": self.round, "signature": self.signature.hex()}
        if self.previous_signature:
            out["previous_signature"] = self.previous_signature.hex()
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Beacon":
        try:
            return cls(
                chain_hash=bytes.fromhex(data["chain_hash"]),
                round=int(data["round"]),
                signature=bytes.fromhex(data["signature"]),
                previous_signature=bytes.fromhex(data.get("previous_signature") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BeaconError(f"malformed beacon: {exc}") from exc


def beacon_message(info: ChainInfo, round_number: int, previous_signature: bytes) -> bytes:
    """The 32-byte digest that a round's signature signs."""
    round_bytes = struct.pack(">Q", round_number)
    if info.scheme == SCHEME_CHAINED_G2:
        return hashlib.sha256(previous_signature + round_bytes).digest()
    return hashlib.sha256(round_bytes).digest()


def verify_beacon(info: ChainInfo, beacon: Beacon, *, expected_round: int | None = None) -> bytes:
    """Verify beacon against info; return its randomness. Raises BeaconError on any failure.

    Checks, in order: the chain hash, the round (>= 1, and == expected_round when given), the
    signature length, that the signature and key decode to subgroup points (checked decoders only),
    and the pairing equation of the scheme.
    """
    if beacon.chain_hash != info.chain_hash():
        raise BeaconError(f"beacon is for chain {beacon.chain_hash.hex()[:16]}…, not {info.name}")
    if beacon.round < 1:
        raise BeaconError("beacon round must be >= 1")
    if expected_round is not None and beacon.round != expected_round:
        raise BeaconError(f"beacon is round {beacon.round}, the protocol pins round {expected_round}")
    if len(beacon.signature) != _SIG_LEN[info.scheme]:
        raise BeaconError(f"signature of {len(beacon.signature)} bytes does not fit {info.scheme}")
    if info.scheme == SCHEME_CHAINED_G2 and len(beacon.previous_signature) not in (32, 96):
        raise BeaconError("chained beacon lacks its previous signature")
    if info.scheme == SCHEME_UNCHAINED_G1 and beacon.previous_signature:
        # unchained rounds sign the round alone: a previous signature would be unsigned free bytes
        # (a second encoding of the same beacon)
        raise BeaconError("an unchained beacon carries no previous signature")
    message = beacon_message(info, beacon.round, beacon.previous_signature)
    try:
        if info.scheme == SCHEME_UNCHAINED_G1:
            sig = G1Point.from_compressed_bytes(beacon.signature)
            pk = G2Point.from_compressed_bytes(info.public_key)
            hm = G1Point.hash_to_curve(message, DST_G1)
            ok = GT.pairing_check([sig, hm], [-G2Point(), pk])
        else:
            sig = G2Point.from_compressed_bytes(beacon.signature)
            pk = G1Point.from_compressed_bytes(info.public_key)
            hm = G2Point.hash_to_curve(message, DST_G2)
            ok = GT.pairing_check([-G1Point(), pk], [sig, hm])
    except (ValueError, TypeError) as exc:
        raise BeaconError(f"beacon signature does not decode: {exc}") from exc
    if not ok:
        raise BeaconError(f"beacon signature for round {beacon.round} does not verify")
    return beacon.randomness


# ---- pinned public networks (chain hashes recomputed and checked in tests) ----------------------
QUICKNET = ChainInfo(
    name="quicknet",
    public_key=bytes.fromhex(
        "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d"
        "1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a"
    ),
    period=3,
    genesis_time=1692803367,
    group_hash=bytes.fromhex("f477d5c89f21a17c863a7f937c6a6d15859414d2be09cd448d4279af331c5d3e"),
    scheme=SCHEME_UNCHAINED_G1,
    beacon_id="quicknet",
)
QUICKNET_CHAIN_HASH = "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"

DEFAULT = ChainInfo(
    name="default",
    public_key=bytes.fromhex(
        "868f005eb8e6e4ca0a47c8a77ceaa5309a47978a7c71bc5cce96366b5d7a569937c529eeda66c7293784a9402801af31"
    ),
    period=30,
    genesis_time=1595431050,
    group_hash=bytes.fromhex("176f93498eac9ca337150b46d21dd58673ea4e3581185f869672e59fa4cb390a"),
    scheme=SCHEME_CHAINED_G2,
)
DEFAULT_CHAIN_HASH = "8990e7a9aaed2ffed73dbd7092123d6f289930540d7651336225dc172e51b2ce"

PUBLIC_NETWORKS = {QUICKNET.name: QUICKNET, DEFAULT.name: DEFAULT}
