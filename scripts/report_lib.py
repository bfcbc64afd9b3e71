"""Small helpers shared by the measurement scripts: statistics and report writing."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np
import torch

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def auc(honest: list[float], attack: list[float]) -> float:
    """P(attack statistic > honest statistic) + 0.5 P(equal): 1.0 is perfect separation."""
    if not honest or not attack:
        return float("nan")
    h = np.asarray(honest)[:, None]
    a = np.asarray(attack)[None, :]
    return float(((a > h).sum() + 0.5 * (a == h).sum()) / (h.size * a.size))


def extrapolated_threshold(honest_means: list[float], positions: int, fpr: float = 1e-6) -> float:
    """Threshold on a per-rollout max statistic at which an honest rollout of `positions` tokens
    exceeds it with probability fpr, modelling the honest per-position value as exponential with the
    measured mean (a heavier tail than the measured, near-zero honest drift): x* = mu*ln(C/fpr)."""
    mu = max(float(np.mean(honest_means)) if honest_means else 0.0, 1e-12)
    return mu * math.log(max(positions, 1) / fpr)


def environment(device: str = "cpu") -> dict:
    """Where a measurement ran; `device` as the script's --device resolved it (rollproof.device)."""
    from rollproof.device import device_name

    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "device": device_name(device)}


def write(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    REPORTS.mkdir(exist_ok=True)
    jp, mp = REPORTS / f"{name}.json", REPORTS / f"{name}.md"
    jp.write_text(json.dumps(data, indent=1, default=float))
    mp.write_text(markdown)
    return jp, mp


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"
