"""Binary Merkle tree over 32-byte leaves (docs/protocol.md section 7).

leaf node = PRF("merkle-leaf", leaf); inner = PRF("merkle-node", left, right); an odd node at the
end of a level is carried up unchanged; the root of zero leaves is PRF("merkle-empty").
"""

from __future__ import annotations

from collections.abc import Sequence

from verification.prf import prf


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return prf("merkle-empty")
    level = [prf("merkle-leaf", leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [prf("merkle-node", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
