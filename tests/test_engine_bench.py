"""scripts/engine_bench.py refuses, before loading anything, a run whose device or engine is not
here: one `error:` line per missing thing and exit code 2 (the same script runs with --device cuda
where a GPU and vLLM's CUDA build are present)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("script_engine_bench", ROOT / "scripts" / "engine_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, monkeypatch, capsys, *argv):
    import verification.model

    def no_load(*a, **kw):
        raise AssertionError("a model was loaded before the run was refused")

    monkeypatch.setattr(verification.model, "load_model", no_load)
    monkeypatch.setattr(sys, "argv", ["engine_bench.py", *argv])
    code = bench.main()
    return code, capsys.readouterr().err.splitlines()


def test_a_malformed_device_is_one_line(bench, monkeypatch, capsys):
    code, lines = _run(bench, monkeypatch, capsys, "--device", "cuda:x", "--engine", "hf")
    assert code == 2
    assert lines == ["error: --device cuda:x: use cpu, cuda or cuda:N (N the index of a CUDA GPU)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_names_every_missing_thing(bench, monkeypatch, capsys):
    from miner.vllm_engine import vllm_missing

    code, lines = _run(bench, monkeypatch, capsys, "--device", "cuda")
    assert code == 2
    assert lines[0].startswith("error: --device cuda: no CUDA GPU is available here")
    # the second line: vLLM absent, or only its CPU build present; either way, what to install
    assert len(lines) == 2 and lines[1].startswith("error: ") and "vllm" in lines[1].lower()
    if vllm_missing() is not None:
        assert lines[1] == "error: " + " ".join(vllm_missing().split())
    else:
        assert "CUDA build" in lines[1]


def test_the_vllm_engine_where_vllm_is_missing(bench, monkeypatch, capsys):
    from miner.vllm_engine import vllm_missing

    if vllm_missing() is None:
        pytest.skip("vLLM is installed in this interpreter")
    code, lines = _run(bench, monkeypatch, capsys, "--engine", "vllm")
    assert code == 2 and lines == ["error: " + " ".join(vllm_missing().split())]
