"""Run by tests/test_replay_distributed.py under torchrun (and in one process): the trainer service
trains every scored window of a validator journal and publishes its checkpoints (training record,
optimizer state, the data it read) to a file store. Every rank has its own in-process chain; rank 0
announces on its own and prints one JSON line per window it trains (window, outcome, note, publication).
With "die-after-built", rank 0's process dies (os._exit) right after the first candidate is
journaled as built, before the state write that ends its span and before its announcement.

usage: torchrun_publish.py JOURNAL STATE_DIR VALIDATOR_UID VALIDATOR_HOTKEY PUBLISH_EVERY [die-after-built]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(journal: str, state_dir: str, validator_uid: int, validator_hotkey: str, publish_every: int,
         die_after_built: bool = False) -> None:
    import os

    import torch
    from bittensor.sp_core import Keypair

    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from replay_env import TRAINER_URI
    from trainer.service import Trainer, TrainerConfig
    from trainer.sources import ValidatorJournal
    from trainer_env import parity_registered
    from verification.model import load_model

    torch.set_num_threads(1)
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        chain = EVMChain.embedded_chain(1)
        key = Keypair.create_from_uri(TRAINER_URI)
        chain.set_trainer(key.ss58_address, chain.account_for(key).address)
        config = TrainerConfig(publish_every=publish_every, heldout_problems=2, heldout_rollouts=2, gate_margin=1.0)
        trainer = Trainer(chain, key, lm, FileStore(Path(state_dir) / "store"), Path(state_dir) / "t", config,
                          validator=(validator_uid, validator_hotkey))
        if die_after_built:
            save = trainer.journal.save_publication

            def save_then_die(version, record, manifest_bytes=None):
                save(version, record, manifest_bytes)
                if record["stage"] == "built":
                    os._exit(3)

            trainer.journal.save_publication = save_then_die
        source = ValidatorJournal(Path(journal), chain, None)
        for window in source.scored_windows():
            if window in trainer.trained_windows:  # trained before a restart
                continue
            rec = trainer.train_window(window, *source.window(window))
            pub = trainer.maybe_publish(window)
            if trainer.rank == 0:
                print(json.dumps({"world": trainer.world, "window": window, "rows": rec.rows,
                                  "applied": bool(rec.step and rec.step["applied"]), "note": rec.note,
                                  "publication": None if pub is None else
                                  {"version": pub.version, "stage": pub.stage, "fingerprint": pub.fingerprint}}),
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6:] == ["die-after-built"])
