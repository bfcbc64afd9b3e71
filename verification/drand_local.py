"""A local drand chain with a seeded key: the embedded default beacon.

Same scheme as quicknet (bls-unchained-g1-rfc9380), same wire format, and its beacons pass the
same verify_beacon(). The key derives from a public seed, so anyone can sign its rounds: it gives
unpredictability only against parties that do not know the seed. Production uses quicknet.
"""

from __future__ import annotations

from dataclasses import dataclass

from py_arkworks_bls12381 import G1Point, G2Point, Scalar

from verification.drand import DST_G1, SCHEME_UNCHAINED_G1, Beacon, ChainInfo, beacon_message
from verification.errors import BeaconError
from verification.prf import prf

LOCAL_GENESIS = 1_700_000_000
LOCAL_PERIOD = 3
DEFAULT_LOCAL_SEED = "rollproof-localnet"


@dataclass(frozen=True)
class LocalDrand:
    seed: str = DEFAULT_LOCAL_SEED
    genesis_time: int = LOCAL_GENESIS
    period: int = LOCAL_PERIOD

    @property
    def _secret(self) -> Scalar:
        return Scalar.from_be_bytes_mod_order(prf("local-drand-key", self.seed))

    @property
    def info(self) -> ChainInfo:
        return ChainInfo(
            name=f"local:{self.seed}",
            public_key=(G2Point() * self._secret).to_compressed_bytes(),
            period=self.period,
            genesis_time=self.genesis_time,
            group_hash=prf("local-drand-group", self.seed),
            scheme=SCHEME_UNCHAINED_G1,
            beacon_id="rollproof-local",
        )

    def sign(self, round_number: int) -> Beacon:
        if round_number < 1:
            raise BeaconError("drand rounds start at 1")
        info = self.info
        message = beacon_message(info, round_number, b"")
        sig = G1Point.hash_to_curve(message, DST_G1) * self._secret
        return Beacon(info.chain_hash(), round_number, sig.to_compressed_bytes())
