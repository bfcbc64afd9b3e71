"""A checkpoint candidate as the trainer's journal holds it (published/<v>.json): the trainer
writes it (trainer/service.py), the status page reads it back (trainer/status.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Publication:
    version: int
    stage: str  # built | uploaded (on the way), announced | withheld (the gate) | expired (it could not be published)
    fingerprint: str
    from_window: int
    heldout: float
    parent_heldout: float
    chance: float
    difference: float
    half_width: float
    bytes: int
    note: str = ""
    # greedy accuracy (0..1) of the candidate and of its parent on the gate's held-out problems under
    # the candidate's params; None in journals written before the gate measured it
    greedy: float | None = None
    parent_greedy: float | None = None
