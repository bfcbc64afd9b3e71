"""The project's EVM contracts: compile the Vyper sources in `contracts/` offline and load the
checked-in artifacts (`adapters/contracts_artifacts/*.json`) that deployments use.

`python -m adapters.contracts` rewrites the artifacts; tests/test_contracts.py recompiles and
checks that they match the sources byte for byte."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

CONTRACT_NAMES = ("SubnetRegistry", "ScoreLedger")
SOURCE_DIR = Path(__file__).resolve().parent.parent / "contracts"


def compile_source(name: str, source_dir: Path = SOURCE_DIR) -> dict:
    import vyper

    path = source_dir / f"{name}.vy"
    source = path.read_text()
    out = vyper.compile_code(source, contract_path=path.name, output_formats=["abi", "bytecode"])
    return {
        "contract": name,
        "compiler": f"vyper {vyper.__version__}",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


def load_artifact(name: str) -> dict:
    if name not in CONTRACT_NAMES:
        raise KeyError(f"unknown contract {name!r}")
    text = resources.files("adapters").joinpath("contracts_artifacts", f"{name}.json").read_text()
    return json.loads(text)


def write_artifacts(out_dir: Path | None = None) -> list[Path]:
    out_dir = out_dir or Path(__file__).resolve().parent / "contracts_artifacts"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONTRACT_NAMES:
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(compile_source(name), indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_artifacts():
        print(p)
