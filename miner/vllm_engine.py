"""The vLLM engine: vLLM's scheduler, paged KV cache and kernels generate the rollouts, and the
protocol's sampler runs inside its decoding pass (miner/vllm_worker.py), so the token, its logprob
and the sketch of the hidden state that produced it come from the one pass that chose it.

Every request of a call is submitted at once (continuous batching: a finished row's slot is refilled
at the next step, rows never wait for the longest one); `max_num_seqs` bounds how many decode
together. After the engine finishes, the worker's records are collected and checked against what
vLLM returned: the same token at every position, a record for every position, and a stop exactly
where the protocol stops (the first EOS id, else max_new_tokens). Any difference raises
EngineProtocolError and nothing of that generation is used (the miner signs nothing).

Weights: the engine loads a directory written from the LoadedModel (miner/engine_model_dir.py); a
checkpoint of the same architecture is swapped in place (the worker loads the new float32 state
dict), so a new window's checkpoint costs a weight copy, not an engine restart.

Timing (`self.timing`, miner/timing.py): each finished generation adds the worker's model-step
seconds (decode) and its protocol sampler's seconds (proof) spent during the call, read from the
worker before and after it (`rollproof_timing`, never reset here), and the tokens it returned.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from miner.engine import GeneratedRollout, RolloutRequest
from miner.engine_choice import VLLM_INSTALL, vllm_missing
from miner.engine_model_dir import WEIGHTS_FILE, write_model_dir, write_weights
from miner.timing import GenerationTiming
from verification.constants import SKETCH_DIM
from verification.errors import EngineError, EngineProtocolError, GenerationAborted, ModelError
from verification.model import LoadedModel

log = logging.getLogger("rollproof.miner.vllm")

PROCESSOR = "miner.vllm_worker:ProtocolSampler"
WORKER_EXTENSION = "miner.vllm_worker.RollproofWorker"
# share of the host's memory vLLM's CPU build reserves for weights and KV cache (its default, 0.92,
# refuses to start on a loaded host); on a GPU, the share of device memory (vLLM's own default)
CPU_MEMORY_FRACTION = 0.1
GPU_MEMORY_FRACTION = 0.9
# the longest sequence the engine is built for (prompt + completion), at most the model's own limit
MAX_MODEL_LEN = 4096
# seconds between should_stop polls while the engine steps
STOP_POLL_S = 1.0

_IDS = itertools.count()


def _tensor_shapes(lm: LoadedModel) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in lm.model.state_dict().items()}


def _first_line(exc: BaseException) -> str:
    """`Type: first line of the message`: what an EngineError quotes of a vLLM failure."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class VLLMEngine:
    name = "vllm"

    def __init__(self, lm: LoadedModel, *, device: str = "cpu", memory_fraction: float | None = None,
                 workdir: Path | str | None = None, max_num_seqs: int = 256, enforce_eager: bool | None = None,
                 max_num_batched_tokens: int | None = None):
        missing = vllm_missing()
        if missing:
            raise EngineError(missing)
        kind = device.split(":")[0]
        if kind not in ("cpu", "cuda"):
            raise EngineError(f"the vllm engine runs on cpu or cuda, not {device!r}")
        if kind == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise EngineError("--device cuda: no CUDA device is visible to torch")
        fraction = memory_fraction if memory_fraction is not None else (
            CPU_MEMORY_FRACTION if kind == "cpu" else GPU_MEMORY_FRACTION)
        if not 0.0 < fraction < 1.0:
            raise EngineError(f"the engine's memory fraction must be in (0, 1), not {fraction}")
        if max_num_seqs < 1:
            raise EngineError("the engine needs at least one sequence at a time (--batch-size)")
        self.device = device
        self.timing = GenerationTiming()
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="rollproof-vllm-")) if workdir is None else Path(workdir)
        try:
            write_model_dir(lm, self.dir)
        except ModelError as exc:
            self._cleanup()
            raise EngineError(str(exc)) from None
        # the weights the worker holds: a root and the module they came from (a model that claims
        # another's root, as attacks in the test suites do, must still run its own weights)
        self._root, self._module = lm.weights_root, lm.model
        self.tensor_shapes = _tensor_shapes(lm)
        self.hidden_size = lm.hidden_size
        self.vocab_size = lm.vocab_size
        limit = int(getattr(lm.model.config, "max_position_embeddings", MAX_MODEL_LEN) or MAX_MODEL_LEN)
        self.max_model_len = min(limit, MAX_MODEL_LEN)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its start-up chatter; errors still show
        try:
            from vllm import LLM
        except Exception as exc:  # a broken install raises anything from its imports (torchvision, ...)
            self._cleanup()
            raise EngineError(f"vLLM is installed but does not import ({_first_line(exc)}); reinstall it: "
                              f"{VLLM_INSTALL}") from None

        started = time.monotonic()
        try:
            self.llm = LLM(model=str(self.dir), dtype="float32", skip_tokenizer_init=True, seed=0,
                           logits_processors=[PROCESSOR], worker_extension_cls=WORKER_EXTENSION,
                           max_model_len=self.max_model_len, gpu_memory_utilization=fraction,
                           max_num_seqs=max_num_seqs,
                           # scripts/engine_bench.py: every prompt of a run prefilled in one step
                           **({} if max_num_batched_tokens is None else {"max_num_batched_tokens": max_num_batched_tokens}),
                           enforce_eager=(kind == "cpu") if enforce_eager is None else enforce_eager)
        except Exception as exc:  # vLLM raises many types at start-up; each is a configuration problem
            self._cleanup()
            raise EngineError(f"vLLM could not start for {lm.name!r} on {device}: {_first_line(exc)}") from None
        self.runner = self.llm.collective_rpc("rollproof_install")[0]
        self.load_s = time.monotonic() - started
        log.info("vLLM engine ready in %.0f s (%s, %s)", self.load_s, device, self.runner)

    # ---- weights -----------------------------------------------------------------------------
    def _use(self, lm: LoadedModel) -> None:
        if lm.hidden_size != self.hidden_size or lm.vocab_size != self.vocab_size:
            raise EngineError(f"model {lm.name!r} has another shape than the engine's: start a new engine")
        if lm.weights_root == self._root and lm.model is self._module:
            return
        # vLLM's reload loads whatever tensors it is given: one of another set (fewer layers) would
        # leave the rest of the old model in place
        if _tensor_shapes(lm) != self.tensor_shapes:
            raise EngineError(f"model {lm.name!r} has other tensors than the engine's model: start a new engine")
        path = write_weights(lm, self.dir / ("next-" + WEIGHTS_FILE))
        try:
            self.llm.collective_rpc("rollproof_load_weights", args=(str(path),))
        except Exception as exc:  # the worker's weights are now unknown: the next call reloads
            self._root = self._module = None
            raise EngineError(f"vLLM could not load the weights of {lm.name!r}: {_first_line(exc)}") from None
        finally:
            path.unlink(missing_ok=True)
        self.llm.reset_prefix_cache()
        self._root, self._module = lm.weights_root, lm.model
        log.info("vLLM engine switched to %s", lm.name)

    # ---- generation --------------------------------------------------------------------------
    def generate(self, lm: LoadedModel, requests: Sequence[RolloutRequest], sketch_key: bytes, *,
                 max_new_tokens: int | None = None, on_tokens: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, proofs: bool = True,
                 stop_at_eos: bool = True) -> list[GeneratedRollout]:
        """Every request's rollout, in request order (the Engine interface, miner/engines.py).

        For scripts/engine_bench.py only: stop_at_eos=False decodes exactly max_new tokens per row
        (equal work; not protocol rollouts), and proofs=False is vLLM's own plain (unseeded) sampling
        at the protocol's temperature, the processor declining the requests: those rollouts are NOT
        the protocol's tokens and carry no proof (NaN logprobs, zero-width sketches), so they must
        never reach a bundle (a validator would reject every one of them)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._use(lm)
        max_new = lm.generation.max_new_tokens if max_new_tokens is None else max_new_tokens
        eos = sorted(lm.eos_ids) if stop_at_eos else []
        ids = [f"rp{os.getpid()}-{next(_IDS)}" for _ in requests]
        for req in requests:  # all checked before any is added: a refused call leaves nothing queued
            if len(req.prompt) + max_new > self.max_model_len:
                raise EngineError(f"a prompt of {len(req.prompt)} tokens and {max_new} new tokens exceed the "
                                  f"engine's {self.max_model_len}-token limit")
        before = self._worker_timing()  # before any request is queued: an engine core may start at once
        for rid, req in zip(ids, requests):
            if proofs:
                params = self._sampling_params(SamplingParams, rid, req, max_new, eos, lm.temperature, sketch_key)
            else:
                # vLLM's plain sampling: batched, unseeded (a per-request seed makes its CPU sampler
                # draw row by row from per-request generators: a slower baseline than a miner's)
                params = SamplingParams(max_tokens=max_new, temperature=lm.temperature, ignore_eos=not stop_at_eos,
                                        stop_token_ids=eos, detokenize=False)
            self.llm.llm_engine.add_request(rid, TokensPrompt(prompt_token_ids=list(req.prompt)), params)
        outputs: dict[str, list[int]] = {}
        seen: dict[str, int] = {}
        engine = self.llm.llm_engine
        polled = time.monotonic()
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    toks = out.outputs[0].token_ids if out.outputs else []
                    if on_tokens and len(toks) > seen.get(out.request_id, 0):
                        on_tokens(len(toks) - seen.get(out.request_id, 0))
                    seen[out.request_id] = len(toks)
                    if out.finished:
                        outputs[out.request_id] = list(toks)
                if should_stop is not None and time.monotonic() - polled >= STOP_POLL_S:
                    polled = time.monotonic()
                    if should_stop():
                        raise GenerationAborted(f"generation stopped with {len(outputs)} of {len(ids)} rollouts done")
        except BaseException:
            engine.abort_request([i for i in ids if i not in outputs])
            self.llm.collective_rpc("rollproof_collect", args=(ids,))  # drop the worker's records
            raise
        after = self._worker_timing()
        self.timing.add(after["engine_s"] - before["engine_s"], after["processor_s"] - before["processor_s"],
                        sum(len(outputs[rid]) for rid in ids if rid in outputs))
        if not proofs:
            return [GeneratedRollout(outputs[rid], np.full(len(outputs[rid]), np.nan, dtype=np.float32),
                                     np.zeros((len(outputs[rid]), 0), dtype=np.int16)) for rid in ids]
        records = self.llm.collective_rpc("rollproof_collect", args=(ids,))[0]
        return [self._checked(rid, outputs.get(rid), records.get(rid), max_new,
                              lm.eos_ids if stop_at_eos else frozenset()) for rid in ids]

    def _worker_timing(self) -> dict:
        """The worker's running totals of model-step and sampler seconds (miner/vllm_worker.py)."""
        return self.llm.collective_rpc("rollproof_timing")[0]

    @staticmethod
    def _sampling_params(SamplingParams, rid: str, req: RolloutRequest, max_new: int, eos: list[int],
                         temperature: float, sketch_key: bytes):
        """vLLM's parameters for one rollout: the protocol's sampler (extra_args) chooses every token
        (greedy is then the one finite logit); vLLM stops at the first EOS id or after max_new."""
        return SamplingParams(
            max_tokens=max_new, temperature=0.0, ignore_eos=True, stop_token_ids=eos, detokenize=False,
            extra_args={"rollproof": {"id": rid, "seed": req.problem_seed.hex(), "rollout": req.rollout_index,
                                      "max_new": max_new, "temperature": temperature,
                                      "sketch_key": sketch_key.hex()}})

    def _checked(self, rid: str, tokens: list[int] | None, rec: dict | None, max_new: int,
                 eos: frozenset[int]) -> GeneratedRollout:
        """The rollout, after checking that vLLM returned exactly the protocol's tokens."""
        if tokens is None:
            raise EngineProtocolError(f"vLLM did not finish request {rid}")
        if rec is None:
            raise EngineProtocolError(f"request {rid}: the protocol's sampler recorded nothing (not applied)")
        if rec["errors"]:
            raise EngineProtocolError(f"request {rid}: {rec['errors'][0]}")
        n = len(tokens)
        chosen = rec["tokens"][:n]
        filled = rec["filled"]
        if n == 0 or not all(filled[:n]):
            raise EngineProtocolError(f"request {rid}: position {filled[:n].index(False) if n else 0} has no proof")
        if tokens != chosen:
            at = next(i for i, (a, b) in enumerate(zip(tokens, chosen)) if a != b)
            raise EngineProtocolError(f"request {rid}: vLLM returned token {tokens[at]} at position {at}, the "
                                      f"protocol's sampler chose {chosen[at]}")
        stops = [i for i, t in enumerate(tokens) if t in eos]
        if (stops and stops[0] != n - 1) or (not stops and n != max_new) or n > max_new:
            raise EngineProtocolError(f"request {rid}: vLLM stopped after {n} tokens; the protocol stops at the "
                                      f"first EOS or after {max_new}")
        if rec["sketches"] is None:
            raise EngineProtocolError(f"request {rid}: no sketches were recorded")
        logprobs = np.frombuffer(rec["logprobs"], dtype=np.float32)[:n].copy()
        sketches = np.frombuffer(rec["sketches"], dtype=np.int16).reshape(-1, SKETCH_DIM)[:n].copy()
        return GeneratedRollout(list(tokens), logprobs, sketches)

    # ---- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already down
                pass
            self.llm = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
