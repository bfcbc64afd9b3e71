# pragma version 0.4.3
"""
@title rollproof subnet registry
@notice One subnet: hotkeys to uids, per-window bundle commitments, u16 weights per validator,
        and the trainer's checkpoint announcements (docs/protocol.md section 15), which name a
        from_window at most max_ahead_windows ahead and which the admin can void.
        The sr25519 hotkey cannot be checked by the EVM, so each registration carries the
        hotkey's signature over (chain id, this contract, owner); readers drop registrations
        whose proof does not verify (docs/protocol.md section 12).
"""

MAX_UIDS: constant(uint256) = 4096
MAX_COMMITMENT: constant(uint256) = 256
MAX_CHECKPOINT_LOCATION: constant(uint256) = 200

struct Neuron:
    hotkey: bytes32
    owner: address
    registered_block: uint256
    proof: Bytes[64]

event Registered:
    uid: indexed(uint16)
    hotkey: indexed(bytes32)
    owner: indexed(address)
    proof: Bytes[64]

event Committed:
    uid: indexed(uint16)
    window: indexed(uint64)
    data: Bytes[MAX_COMMITMENT]

event WeightsSet:
    validator_uid: indexed(uint16)
    window: indexed(uint64)
    dests: DynArray[uint16, MAX_UIDS]
    weights: DynArray[uint16, MAX_UIDS]

event ValidatorPermit:
    uid: indexed(uint16)
    allowed: bool

struct Announcement:
    from_window: uint64
    fingerprint: bytes32
    manifest_hash: bytes32
    location: Bytes[MAX_CHECKPOINT_LOCATION]
    block: uint256

event TrainerSet:
    trainer: indexed(address)
    hotkey: bytes32

event CheckpointAnnounced:
    index: indexed(uint256)
    from_window: indexed(uint64)
    fingerprint: bytes32
    manifest_hash: bytes32
    location: Bytes[MAX_CHECKPOINT_LOCATION]

event AnnouncementVoided:
    index: indexed(uint256)
    from_window: indexed(uint64)

netuid: public(immutable(uint16))
window_blocks: public(immutable(uint64))
admin: public(immutable(address))
# an announcement made in window v applies from window >= v + activation_windows
activation_windows: public(immutable(uint64))
# ... and names a from_window of at most v + max_ahead_windows (MAX_ANNOUNCE_AHEAD_WINDOWS)
max_ahead_windows: public(immutable(uint64))

neuron_count: public(uint16)
neurons: public(HashMap[uint16, Neuron])
validator_permit: public(HashMap[uint16, bool])
# (uid, window) -> commitment bytes and the block it landed in; written once
commitment: public(HashMap[uint16, HashMap[uint64, Bytes[MAX_COMMITMENT]]])
commitment_block: public(HashMap[uint16, HashMap[uint64, uint256]])
# validator uid -> latest window it set weights for (+1, so 0 means never)
weights_window: public(HashMap[uint16, uint64])
weight_dests: HashMap[uint16, DynArray[uint16, MAX_UIDS]]
weight_values: HashMap[uint16, DynArray[uint16, MAX_UIDS]]
# the one account allowed to announce checkpoints, and the sr25519 key that signs its manifests
trainer: public(address)
trainer_hotkey: public(bytes32)
announcement_count: public(uint256)
announcements: public(HashMap[uint256, Announcement])
# index -> the trainer hotkey when it was announced: its manifest must carry that key's signature,
# whatever set_trainer names later (a verdict on an announcement never changes)
announcement_hotkey: public(HashMap[uint256, bytes32])
# index -> the block the admin voided it in (0: not voided); readers apply a void from window
# window_of(that block) + activation_windows on
voided_block: public(HashMap[uint256, uint256])
# the announcements not voided, as a doubly linked list of index + 1 (0: none), so that "after the
# last announcement" compares with the last one not voided in constant gas
live_tail: public(uint256)
live_prev: HashMap[uint256, uint256]
live_next: HashMap[uint256, uint256]


@deploy
def __init__(netuid_: uint16, window_blocks_: uint64, activation_windows_: uint64, max_ahead_windows_: uint64):
    assert window_blocks_ > 0, "window_blocks"
    assert activation_windows_ > 0, "activation_windows"
    assert max_ahead_windows_ >= activation_windows_, "max_ahead_windows"
    netuid = netuid_
    window_blocks = window_blocks_
    activation_windows = activation_windows_
    max_ahead_windows = max_ahead_windows_
    admin = msg.sender


@external
def register(hotkey: bytes32, proof: Bytes[64]) -> uint16:
    uid: uint16 = self.neuron_count
    assert convert(uid, uint256) < MAX_UIDS, "subnet full"
    self.neurons[uid] = Neuron(hotkey=hotkey, owner=msg.sender, registered_block=block.number, proof=proof)
    self.neuron_count = uid + 1
    log Registered(uid=uid, hotkey=hotkey, owner=msg.sender, proof=proof)
    return uid


@external
def set_validator_permit(uid: uint16, allowed: bool):
    assert msg.sender == admin, "admin only"
    assert uid < self.neuron_count, "no such uid"
    self.validator_permit[uid] = allowed
    log ValidatorPermit(uid=uid, allowed=allowed)


@view
@internal
def _current_window() -> uint64:
    return convert(block.number, uint64) // window_blocks


@external
def commit(uid: uint16, window: uint64, data: Bytes[MAX_COMMITMENT]):
    assert uid < self.neuron_count, "no such uid"
    assert self.neurons[uid].owner == msg.sender, "not the owner of uid"
    assert window == self._current_window(), "not the current window"
    assert self.commitment_block[uid][window] == 0, "already committed for this window"
    self.commitment[uid][window] = data
    self.commitment_block[uid][window] = block.number
    log Committed(uid=uid, window=window, data=data)


@external
def set_weights(uid: uint16, window: uint64, dests: DynArray[uint16, MAX_UIDS], weights: DynArray[uint16, MAX_UIDS]):
    assert uid < self.neuron_count, "no such uid"
    assert self.neurons[uid].owner == msg.sender, "not the owner of uid"
    assert self.validator_permit[uid], "no validator permit"
    assert len(dests) == len(weights), "length mismatch"
    assert window < self._current_window(), "window not over"
    assert window + 1 > self.weights_window[uid], "weights already set for this window"
    for d: uint16 in dests:
        assert d < self.neuron_count, "no such dest uid"
    self.weights_window[uid] = window + 1
    self.weight_dests[uid] = dests
    self.weight_values[uid] = weights
    log WeightsSet(validator_uid=uid, window=window, dests=dests, weights=weights)


@external
def set_trainer(trainer_: address, hotkey: bytes32):
    assert msg.sender == admin, "admin only"
    self.trainer = trainer_
    self.trainer_hotkey = hotkey
    log TrainerSet(trainer=trainer_, hotkey=hotkey)


@external
def announce_checkpoint(from_window: uint64, fingerprint: bytes32, manifest_hash: bytes32,
                        location: Bytes[MAX_CHECKPOINT_LOCATION]):
    assert self.trainer != empty(address) and msg.sender == self.trainer, "trainer only"
    current: uint64 = self._current_window()
    assert from_window >= current + activation_windows, "announcement for a past window"
    assert from_window <= current + max_ahead_windows, "announcement too far ahead"
    tail: uint256 = self.live_tail
    if tail > 0:
        assert from_window > self.announcements[tail - 1].from_window, "not after the last announcement"
    i: uint256 = self.announcement_count
    self.announcements[i] = Announcement(from_window=from_window, fingerprint=fingerprint,
                                         manifest_hash=manifest_hash, location=location, block=block.number)
    self.announcement_count = i + 1
    self.announcement_hotkey[i] = self.trainer_hotkey
    self.live_prev[i] = tail
    if tail > 0:
        self.live_next[tail - 1] = i + 1
    self.live_tail = i + 1
    log CheckpointAnnounced(index=i, from_window=from_window, fingerprint=fingerprint,
                            manifest_hash=manifest_hash, location=location)


@external
def void_announcement(index: uint256):
    """The admin voids an announcement: readers ignore it from window window_of(this block) +
    activation_windows on, and later announcements need only follow the last one not voided."""
    assert msg.sender == admin, "admin only"
    assert index < self.announcement_count, "no such announcement"
    assert self.voided_block[index] == 0, "already voided"
    self.voided_block[index] = block.number
    prev: uint256 = self.live_prev[index]
    nxt: uint256 = self.live_next[index]
    if nxt > 0:
        self.live_prev[nxt - 1] = prev
    else:
        self.live_tail = prev
    if prev > 0:
        self.live_next[prev - 1] = nxt
    log AnnouncementVoided(index=index, from_window=self.announcements[index].from_window)


@view
@external
def owner_of(uid: uint16) -> address:
    """The EVM account that registered uid (the zero address for an unused uid)."""
    return self.neurons[uid].owner


@view
@external
def get_weights(uid: uint16) -> (uint64, DynArray[uint16, MAX_UIDS], DynArray[uint16, MAX_UIDS]):
    """(window + 1, dests, weights) of the latest weights uid set; window + 1 == 0 means never."""
    return self.weights_window[uid], self.weight_dests[uid], self.weight_values[uid]
