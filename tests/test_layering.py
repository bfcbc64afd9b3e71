"""Layers only point down: verification <- adapters <- roles (miner, validator, trainer, adversary) <- app.
Parsed from the source (every import statement, at any depth), so a function-level import that
reaches up a layer fails here too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"verification": 0, "adapters": 1, "miner": 2, "validator": 2, "trainer": 2, "adversary": 3, "rollproof": 4}
# roles may use each other only where listed (the trainer reads validator reports, attacks subclass the miner)
ALLOWED_SIDEWAYS = {("trainer", "validator"), ("trainer", "miner"), ("adversary", "miner"), ("adversary", "validator")}
# modules of the pure core that must not pull heavy or networked dependencies
PURE_FORBIDDEN = ("torch", "transformers", "bittensor", "web3", "boto3")
MODEL_BOUND = {"verification/model.py", "verification/signing.py", "verification/checkpoint_model.py",
               "verification/tensor_ops.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_reaches_up_a_layer():
    bad = []
    for pkg, level in LAYER.items():
        for path in (ROOT / pkg).rglob("*.py"):
            for top in _imports(path):
                if top in LAYER and top != pkg:
                    if LAYER[top] > level or (LAYER[top] == level and (pkg, top) not in ALLOWED_SIDEWAYS):
                        bad.append(f"{path.relative_to(ROOT)} imports {top}")
    assert not bad, "\n".join(bad)


def test_pure_core_has_no_heavy_imports_in_source():
    bad = []
    for path in (ROOT / "verification").rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        if rel in MODEL_BOUND:
            continue
        for top in _imports(path) & set(PURE_FORBIDDEN):
            bad.append(f"{rel} imports {top}")
    assert not bad, "\n".join(bad)


def test_importing_the_verifier_loads_no_torch_or_bittensor():
    code = ("import sys, verification.verifier, verification.bundle, verification.challenge, "
            "verification.environments, verification.scoring; "
            f"print([m for m in {PURE_FORBIDDEN!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
