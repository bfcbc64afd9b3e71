"""A loaded model written as a directory another engine can load: config.json (Llama architecture),
the float32 state dict as model.safetensors, generation_config.json and the tokenizer. The weights
are the LoadedModel's own (the GGUF-dequantized base model, or a checkpoint with its LoRA merged),
so the engine runs exactly the model whose fingerprint the bundle names."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from verification.errors import ModelError
from verification.model import LoadedModel

WEIGHTS_FILE = "model.safetensors"


def engine_state_dict(lm: LoadedModel) -> dict[str, torch.Tensor]:
    """The float32 state dict, contiguous, without the LM head where it is tied to the embeddings
    (safetensors refuses shared storage; the engine ties them again from the config)."""
    tied = bool(getattr(lm.model.config, "tie_word_embeddings", False))
    out = {}
    for name, t in lm.model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        out[name] = t.detach().to("cpu", torch.float32).contiguous().clone()
    return out


def write_weights(lm: LoadedModel, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(engine_state_dict(lm), str(path))
    return path


def write_model_dir(lm: LoadedModel, directory: Path) -> Path:
    """Write the engine's copy of `lm` into `directory` (created); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    config = lm.model.config.to_dict()
    arch = config.get("model_type")
    if arch != "llama":
        raise ModelError(f"the vLLM engine writes Llama models only; {lm.name!r} is {arch!r}")
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = "float32"
    config["dtype"] = "float32"
    config.pop("quantization_config", None)
    (directory / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": sorted(lm.eos_ids)}))
    write_weights(lm, directory / WEIGHTS_FILE)
    lm.tokenizer.save_pretrained(str(directory))
    return directory
