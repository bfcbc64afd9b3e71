"""The measurement scripts' `--engine`: a vLLM the interpreter cannot import is one `error:` line and
exit 2 before any model loads, and the equality script's first-difference rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script,argv", [("attacks", ["--engine", "vllm"]),
                                         ("false_rejections", ["--engine", "vllm"]),
                                         ("engine_equality", [])])
def test_a_missing_vllm_is_one_error_line_before_any_model_loads(script, argv, monkeypatch, capsys):
    import verification.model

    module = _script(script, monkeypatch)
    monkeypatch.setitem(sys.modules, "vllm", None)  # Python's own marker of a module that cannot be imported
    monkeypatch.setattr(verification.model, "load_model", lambda *a, **kw: pytest.fail("a model was loaded"))
    monkeypatch.setattr(module, "load_model", lambda *a, **kw: pytest.fail("a model was loaded"))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the vllm engine needs vLLM, which is not installed: bash scripts/install_vllm.sh") and err.count("\n") == 1, err


def test_the_first_difference_counts_a_length_difference(monkeypatch):
    first = _script("engine_equality", monkeypatch).first_difference
    a = np.array([5, 6, 7, 8], dtype=np.uint32)
    assert first(a, a.copy()) is None
    assert first(a, np.array([5, 6, 9, 8], dtype=np.uint32)) == 2
    assert first(a, a[:3]) == 3
    assert first(a[:1], np.array([4], dtype=np.uint32)) == 0


def test_hf_choice_at_is_the_token_the_hf_engine_sampled(monkeypatch):
    """The equality report names, where vLLM's token has a gap, the token the HF logprobs pick: on an
    HF engine rollout that pick is the rollout's own token at every position."""
    from miner.engine import RolloutRequest, generate
    from verification.model import load_model
    from verification.sketch import sketch_vectors

    module = _script("engine_equality", monkeypatch)
    lm = load_model("tiny")
    prompt, seed = lm.chat_prompt_ids("1+2="), bytes(range(32))
    (row,) = generate(lm, [RolloutRequest(prompt, seed, 3)], sketch_vectors(bytes(32), lm.hidden_size),
                      max_new_tokens=6)
    completion = np.asarray(row.completion, dtype=np.uint32)
    assert [module.hf_choice_at(lm, prompt, completion, seed, 3, at) for at in range(len(completion))] == row.completion
    # the keys matter: under other rollout indices the seeded pick at position 0 is not always the same
    assert any(module.hf_choice_at(lm, prompt, completion, seed, r, 0) != row.completion[0] for r in range(4, 16))
