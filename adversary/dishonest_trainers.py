"""Dishonest trainers for the local network and the replay tests: each announces a checkpoint that
is not what its training record says, in a way a real trainer holding the announcing key could,
and each is caught by replaying the record (docs/protocol.md section 16)."""

from __future__ import annotations

import numpy as np
import torch

from trainer.service import Trainer
from trainer.step import TrainingRow


class ExtraRowTrainer(Trainer):
    """Trains every step on one row no validator verified (a copy of the first verified row with
    the largest advantage the trainer likes), and records only the verified rows."""

    kind = "extra-row"

    def training_batch(self, trainable: list) -> list[TrainingRow]:
        batch = super().training_batch(trainable)
        first = batch[0]
        forged = TrainingRow(first.prompt, first.completion, np.asarray(first.behaviour_logprobs), 3.0)
        return batch + [forged]


class TamperedAdapterTrainer(Trainer):
    """Trains honestly, then moves the adapter before building each candidate (a planted change:
    one module's lora_B scaled by 1.5), and announces that adapter with the honest record."""

    kind = "tampered-adapter"

    def _publish(self, current_window):
        with torch.no_grad():
            for name, p in self.policy.named_adapter_parameters():
                if "lora_B" in name and float(p.abs().max()) > 0:
                    p.mul_(1.5)
                    break
        return super()._publish(current_window)


DISHONEST_TRAINERS = {cls.kind: cls for cls in (ExtraRowTrainer, TamperedAdapterTrainer)}
