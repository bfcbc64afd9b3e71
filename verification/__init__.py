"""rollproof protocol core: pure functions and data types shared by the miner, the validator
and the offline auditor. Nothing in this package touches the network or a chain."""

from verification.constants import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
