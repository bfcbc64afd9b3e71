"""Run by tests/test_trainer_loop.py: train every scored window of a validator journal (no
publishing), printing each window as it is journaled; killed and restarted by the test."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(journal: str, state_dir: str, out: str) -> None:
    import torch
    from bittensor.sp_core import Keypair
    from safetensors.torch import save_file

    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from trainer.adapter_files import adapter_tensors
    from trainer.service import Trainer, TrainerConfig
    from trainer.sources import ValidatorJournal
    from trainer_env import parity_registered
    from verification.model import load_model

    torch.set_num_threads(1)
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        chain = EVMChain.embedded_chain(1)
        trainer = Trainer(chain, Keypair.create_from_uri("//t"), lm, FileStore(Path(state_dir) / "store"),
                          Path(state_dir) / "t", TrainerConfig(publish_every=10**9),
                          validator=(0, Keypair.create_from_uri("//v").ss58_address))
        source = ValidatorJournal(Path(journal), chain, None)
        for window in source.scored_windows():
            rec = trainer.train_window(window, *source.window(window))
            print(f"trained {window} {bool(rec.step and rec.step['applied'])}", flush=True)
        save_file(adapter_tensors(trainer.policy), out)
        print(f"done {trainer.steps_applied}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
