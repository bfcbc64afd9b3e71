"""The base model's values as docs/protocol.md section 7 states them (weights root, tokenizer and
chat-template hashes, fingerprint, shape, EOS set) are what loading SmolLM2 here gives: the doc is
normative, so a drift in transformers, tokenizers or the GGUF package must fail this test, not
change every miner's fingerprint silently. Loads SmolLM2 (about 45 s): marked slow."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


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


@pytest.mark.slow
def test_smollm2_loads_to_the_values_the_protocol_states():
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
