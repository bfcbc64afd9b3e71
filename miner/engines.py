"""One interface for the miner's generation engines.

An engine turns rollout requests (prompt ids, problem seed, rollout index) into rollouts with their
per-token commitments (token, logprob, sketch) by the protocol's sampling rule
(docs/protocol.md sections 5 and 6). The window loop, the journal and the bundle builder see only
this interface: which engine produced a row never shows in the bundle, and the validator checks
every row the same way.

* `hf`: the Hugging Face decode loop in miner/engine.py (static batches, any device torch has).
* `vllm`: vLLM's continuous-batching engine with the protocol's sampler inside its decoding pass
  (miner/vllm_engine.py); needs the `vllm` extra (README).

`open_engine` is the one place a name becomes an engine; a name it cannot honour raises EngineError
with what to install or change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from miner.engine import GeneratedRollout, RolloutRequest, generate
from miner.engine_choice import DEFAULT_BATCH, engine_problem
from miner.timing import GenerationTiming
from verification.errors import EngineError
from verification.model import LoadedModel
from verification.sketch import sketch_vectors



class Engine(Protocol):
    name: str
    # decode seconds, proof seconds and tokens of every generation so far (miner/timing.py): the
    # miner reports the difference over a window's generation
    timing: GenerationTiming

    def generate(self, lm: LoadedModel, requests: Sequence[RolloutRequest], sketch_key: bytes, *,
                 max_new_tokens: int | None = None,
                 on_tokens: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[GeneratedRollout]:
        """Every request's rollout, in request order, under `lm` (its weights, temperature and
        max_new_tokens). `on_tokens(n)`: n more tokens were generated. `should_stop()`: polled
        between steps; True aborts with GenerationAborted. Raises EngineProtocolError when the
        engine produced anything but the protocol's tokens."""
        ...

    def close(self) -> None:
        ...


class HFEngine:
    """The Hugging Face engine: static batches of `batch_size` rows (miner/engine.py)."""

    name = "hf"

    def __init__(self, batch_size: int = 16):
        if batch_size < 1:
            raise EngineError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.timing = GenerationTiming()

    def generate(self, lm, requests, sketch_key, *, max_new_tokens=None, on_tokens=None, should_stop=None):
        vectors = sketch_vectors(sketch_key, lm.hidden_size)
        return generate(lm, requests, vectors, max_new_tokens=max_new_tokens, batch_size=self.batch_size,
                        on_tokens=on_tokens, should_stop=should_stop, timing=self.timing)

    def close(self) -> None:
        pass


def open_engine(name: str, lm: LoadedModel, *, batch_size: int | None = None, device: str = "cpu",
                memory_fraction: float | None = None, workdir=None) -> Engine:
    """The engine called `name` for `lm`, ready to generate (batch_size None: the engine's default,
    miner/engine_choice.DEFAULT_BATCH). EngineError when it cannot run here."""
    problem = engine_problem(name)
    if problem:
        raise EngineError(problem)
    batch_size = DEFAULT_BATCH[name] if batch_size is None else batch_size
    if name == "hf":
        return HFEngine(batch_size)
    from miner.vllm_engine import VLLMEngine

    return VLLMEngine(lm, device=device, memory_fraction=memory_fraction, workdir=workdir, max_num_seqs=batch_size)
