"""sr25519 hotkey signatures through the bittensor SDK's sp_core Keypair.

The SDK is imported on first use, so that importing the pure protocol (the Verifier among it) does
not load bittensor."""

from __future__ import annotations

from verification.errors import SignatureError


def sign(keypair, message: bytes) -> bytes:
    """keypair: a bittensor.sp_core Keypair (or anything with .sign(bytes) -> 64 bytes)."""
    return bytes(keypair.sign(message))


def verify(ss58_address: str, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless signature is ss58_address's sr25519 signature of message."""
    if len(signature) != 64:
        raise SignatureError(f"sr25519 signatures are 64 bytes, got {len(signature)}")
    from bittensor.sp_core import Keypair

    try:
        ok = Keypair(ss58_address=ss58_address).verify(message, signature)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"cannot verify signature for {ss58_address!r}: {exc}") from exc
    if not ok:
        raise SignatureError(f"signature does not verify for hotkey {ss58_address}")
