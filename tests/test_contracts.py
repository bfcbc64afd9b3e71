"""The checked-in contract artifacts are exactly what the Vyper sources compile to."""

import json

import pytest

from adapters.contracts import CONTRACT_NAMES, SOURCE_DIR, compile_source, load_artifact


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_matches_a_fresh_compile(name):
    fresh = compile_source(name)
    stored = load_artifact(name)
    assert stored["source_sha256"] == fresh["source_sha256"], f"contracts/{name}.vy changed: run python -m adapters.contracts"
    assert stored["bytecode"] == fresh["bytecode"]
    assert json.dumps(stored["abi"], sort_keys=True) == json.dumps(fresh["abi"], sort_keys=True)
    assert stored["compiler"] == "vyper 0.4.3"


def test_sources_live_in_contracts_dir():
    assert sorted(p.stem for p in SOURCE_DIR.glob("*.vy")) == sorted(CONTRACT_NAMES)
