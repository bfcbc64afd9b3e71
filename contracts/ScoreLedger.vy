# pragma version 0.4.3
"""
@title rollproof score ledger
@notice Per window and validator: the miners' normalized u16 scores, the Merkle root over the
        digests of every rollout the validator verified, and the SHA-256 of its verdict report.
        Written once per (validator, window); auditors replay the window offline and compare.
"""

interface SubnetRegistry:
    def neuron_count() -> uint16: view
    def validator_permit(uid: uint16) -> bool: view
    def owner_of(uid: uint16) -> address: view
    def window_blocks() -> uint64: view

MAX_UIDS: constant(uint256) = 4096

struct Entry:
    uids: DynArray[uint16, MAX_UIDS]
    scores: DynArray[uint16, MAX_UIDS]
    verified_root: bytes32
    report_hash: bytes32
    block: uint256

event ScoresRecorded:
    validator_uid: indexed(uint16)
    window: indexed(uint64)
    verified_root: bytes32
    report_hash: bytes32
    uids: DynArray[uint16, MAX_UIDS]
    scores: DynArray[uint16, MAX_UIDS]

registry: public(immutable(SubnetRegistry))
entries: HashMap[uint16, HashMap[uint64, Entry]]


@deploy
def __init__(registry_: address):
    registry = SubnetRegistry(registry_)


@external
def record(validator_uid: uint16, window: uint64, uids: DynArray[uint16, MAX_UIDS],
           scores: DynArray[uint16, MAX_UIDS], verified_root: bytes32, report_hash: bytes32):
    assert validator_uid < staticcall registry.neuron_count(), "no such uid"
    assert staticcall registry.owner_of(validator_uid) == msg.sender, "not the owner of uid"
    assert staticcall registry.validator_permit(validator_uid), "no validator permit"
    assert len(uids) == len(scores), "length mismatch"
    assert window < convert(block.number, uint64) // staticcall registry.window_blocks(), "window not over"
    assert self.entries[validator_uid][window].block == 0, "already recorded"
    self.entries[validator_uid][window] = Entry(uids=uids, scores=scores, verified_root=verified_root,
                                                 report_hash=report_hash, block=block.number)
    log ScoresRecorded(validator_uid=validator_uid, window=window, verified_root=verified_root,
                       report_hash=report_hash, uids=uids, scores=scores)


@view
@external
def entry(validator_uid: uint16, window: uint64) -> Entry:
    return self.entries[validator_uid][window]
