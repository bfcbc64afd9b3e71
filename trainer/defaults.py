"""The trainer's defaults that `rollproof trainer run` exposes as options, shared with
trainer.service and trainer.step so the command line and the library agree; imports nothing, so
the CLI reads it without loading torch."""

# AdamW learning rate of the LoRA adapter (measured: reports/learning.md)
LR = 5e-5
# applied steps between candidate checkpoints
PUBLISH_EVERY = 1
# held-out problems of the acceptance gate (each evaluated with the protocol's seeded sampling)
HELDOUT_PROBLEMS = 48
# a candidate is withheld when its held-out reward is below its parent's by more than this (reward
# units, 0..1); 0.02 is about one held-out problem in 48
GATE_MARGIN = 0.02
