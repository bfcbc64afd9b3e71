"""The protocol inside vLLM's worker process: a logits processor that draws every token by the
protocol's seeded Gumbel-max (docs/protocol.md section 5) and leaves only that token's logit
finite, so vLLM's own sampler must pick it, and a worker extension that hands the per-token
commitments back to the miner.

What runs where (vLLM 0.32: the CPU build runs the V1 model runner, the GPU release defaults to V2):
* `ProtocolSampler` (a logits processor under both runners' interfaces) sees the float32 logits of
  every row of a step before temperature. For a row of a rollproof request it computes lp = log_softmax(logits / T) in float32
  (the protocol's logprobs), the protocol's token from lp and the request's noise key for that
  position, the token's logprob, and the sketch of the final normed hidden state that produced the
  row; then it sets every other logit of the row to -inf.
* `RollproofWorker` (vLLM's `worker_extension_cls`) wraps the model's `compute_logits` so the hidden
  states of the rows being sampled (the LM head's input: the protocol's h_i) are kept for the
  processor, and gives the recorded tokens, logprobs and sketches to the miner through
  `collective_rpc`, where the miner compares them with the tokens vLLM returned before signing.

A request opts in with `SamplingParams.extra_args["rollproof"]` = {"id", "seed" (problem seed hex),
"rollout", "max_new", "temperature", "sketch_key" (hex)}; other requests pass through untouched.
Nothing here is consensus: the verifier recomputes everything with its own model (docs/protocol.md
sections 5 and 6)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from miner.timing import Stopwatch

EXTRA_KEY = "rollproof"
# what a request's extra_args[EXTRA_KEY] must hold (miner/vllm_engine.VLLMEngine._sampling_params)
SPEC_KEYS = frozenset({"id", "seed", "rollout", "max_new", "temperature", "sketch_key"})

# rollouts' records kept in the worker until the miner collects them (one per request id)
_RECORDS: dict[str, "_Record"] = {}
_LOCK = threading.Lock()
# the hidden states of the rows `compute_logits` last turned into logits
_HIDDEN: list = [None]
# seconds the worker spent in the protocol's sampler and in vLLM's model steps (execute_model and
# sample_tokens, the processor's time included), since the last rollproof_timing(reset=True): the
# proof's share of the engine's time, measured where it is spent (scripts/engine_bench.py; the
# miner's decode and proof seconds, miner/vllm_engine.py, read it without resetting)
_TIMING = {"processor_s": 0.0, "engine_s": 0.0, "steps": 0}
# sketch vectors per (sketch key, hidden size) as torch tensors on the model's device
_VECTORS: dict = {}
_VECTORS_KEEP = 4


@dataclass
class _Record:
    max_new: int
    tokens: np.ndarray = field(init=False)
    logprobs: np.ndarray = field(init=False)
    sketches: np.ndarray | None = None
    filled: np.ndarray = field(init=False)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.tokens = np.full(self.max_new, -1, dtype=np.int64)
        self.logprobs = np.zeros(self.max_new, dtype=np.float32)
        self.filled = np.zeros(self.max_new, dtype=bool)


@dataclass
class _Slot:
    keys: np.ndarray  # uint64 [max_new]
    temperature: float
    sketch_key: bytes
    record: _Record


def _vectors(key: bytes, hidden_size: int, device):
    import torch

    from verification.sketch import sketch_vectors

    vec = _VECTORS.get((key, hidden_size, str(device)))
    if vec is None:
        if len(_VECTORS) >= _VECTORS_KEEP:
            _VECTORS.clear()
        vec = _VECTORS[(key, hidden_size, str(device))] = torch.from_numpy(
            sketch_vectors(key, hidden_size)).to(device)
    return vec


def _parse(extra: dict):
    from verification.sampling import noise_keys

    spec = extra[EXTRA_KEY]
    max_new = int(spec["max_new"])
    keys = noise_keys(bytes.fromhex(spec["seed"]), int(spec["rollout"]), max_new)
    return str(spec["id"]), keys, float(spec["temperature"]), bytes.fromhex(spec["sketch_key"]), max_new


def _bases() -> tuple[type, ...]:
    """vLLM's logits-processor base classes present in this install: the V1 runner's (what the CPU
    build runs: its V2 runner needs Triton) and the V2 runner's (the GPU release's default). The
    processor subclasses every one found, so each runner's loader accepts it."""
    bases = []
    try:
        from vllm.v1.sample.logits_processor import LogitsProcessor as V1
        bases.append(V1)
    except ImportError:
        pass
    try:
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2
        bases.append(V2)
    except ImportError:
        pass
    return tuple(bases) or (object,)


class ProtocolSampler(*_bases()):
    """vLLM logits processor: the protocol's token is the only finite logit of its row.

    Under the V1 runner vLLM calls __init__(vllm_config, device, is_pin_memory), update_state(batch
    update) before each step and apply(logits) with one row per batch index; under the V2 runner
    __init__(vllm_config, req_states), add_request(slot, params) and apply(logits, ctx) with rows
    mapped to slots by ctx. Both end in `_sample_rows`."""

    def __init__(self, vllm_config, *args, **kwargs):
        self.req_states = args[0] if len(args) == 1 else kwargs.get("req_states")
        self.slots: dict[int, _Slot] = {}  # V1: batch index; V2: request slot
        self.outputs: dict[int, list[int]] = {}  # V1: batch index -> the request's running output ids

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        extra = sampling_params.extra_args or {}
        if EXTRA_KEY in extra:
            spec = extra[EXTRA_KEY]
            missing = SPEC_KEYS - set(spec)
            if missing:
                raise ValueError(f"rollproof request lacks {sorted(missing)}")

    def is_argmax_invariant(self) -> bool:
        return False  # it chooses the token: greedy requests must see it too

    # ---- request bookkeeping ----------------------------------------------------------------
    def _slot_for(self, sampling_params) -> _Slot | None:
        extra = sampling_params.extra_args or {}
        if EXTRA_KEY not in extra:
            return None
        rid, keys, temperature, sketch_key, max_new = _parse(extra)
        with _LOCK:
            rec = _RECORDS.get(rid)
            if rec is None or rec.max_new != max_new:
                rec = _RECORDS[rid] = _Record(max_new)
        return _Slot(keys, temperature, sketch_key, rec)

    def add_request(self, req_idx: int, sampling_params) -> bool:  # V2
        slot = self._slot_for(sampling_params)
        if slot is None:
            self.slots.pop(req_idx, None)
            return False
        self.slots[req_idx] = slot
        return True

    def update_state(self, batch_update) -> None:  # V1
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.slots.pop(index, None)
            self.outputs.pop(index, None)
        for index, params, _prompt, output_ids in batch_update.added:
            slot = self._slot_for(params)
            if slot is None:
                self.slots.pop(index, None)
                self.outputs.pop(index, None)
            else:
                self.slots[index], self.outputs[index] = slot, output_ids
        for a, b, direction in batch_update.moved:
            sa, sb = self.slots.pop(a, None), self.slots.pop(b, None)
            oa, ob = self.outputs.pop(a, None), self.outputs.pop(b, None)
            if sa is not None:
                self.slots[b], self.outputs[b] = sa, oa
            if direction.name == "SWAP" and sb is not None:
                self.slots[a], self.outputs[a] = sb, ob

    # ---- the step ---------------------------------------------------------------------------
    def apply(self, logits, ctx=None):
        if not self.slots:
            return logits
        # on a GPU the step's forward pass may still be running when apply is called: the span is
        # timed on the device's stream (miner/timing.py), not by the host's clock, which would count
        # the wait for the forward pass as the sampler's
        clock = Stopwatch(logits.device)
        clock.start()
        try:
            return self._apply(logits, ctx)
        finally:
            clock.stop()
            _TIMING["processor_s"] += clock.seconds()
            _TIMING["steps"] += 1

    def _apply(self, logits, ctx):
        rows: list[tuple[int, _Slot, int]] = []
        if ctx is None:  # V1: row r is batch index r; the token's index is the outputs so far
            for r in range(logits.shape[0]):
                s = self.slots.get(r)
                if s is not None:
                    rows.append((r, s, len(self.outputs[r])))
        else:  # V2: rows map to slots; the token's index follows from its input position
            prompt_len = self.req_states.prompt_len.np
            for r, (slot, pos) in enumerate(zip(ctx.expanded_idx_mapping.tolist(), ctx.pos.tolist())):
                s = self.slots.get(slot)
                if s is not None and pos + 1 >= int(prompt_len[slot]):  # not a chunk of an unfinished prompt
                    rows.append((r, s, pos + 1 - int(prompt_len[slot])))
        return _sample_rows(logits, rows)


def _sample_rows(logits, rows: list[tuple[int, _Slot, int]]):
    """The protocol's token, its logprob and the sketch for each (row, request, token index); every
    other logit of those rows becomes -inf. A later call for the same index overwrites the record
    (a chunked prefill's discarded row comes before the real one)."""
    import torch

    from verification import tensor_ops
    from verification.constants import SKETCH_DIM, SKETCH_SCALE

    kept = []
    for r, s, i in rows:
        if i >= s.record.max_new:
            s.record.errors.append(f"asked for token {i} beyond max_new {s.record.max_new}")
        else:
            kept.append((r, s, i))
    if not kept:
        return logits
    dev = logits.device
    n_rows = logits.shape[0]
    # the usual step: every row is a rollproof request, in order; then the rows are the logits
    # themselves (a view), not a gathered copy of V floats per row
    whole = len(kept) == n_rows and all(r == n for n, (r, _, _) in enumerate(kept))
    sel = None if whole else torch.tensor([r for r, _, _ in kept], dtype=torch.long, device=dev)
    row_logits = logits if whole else logits[sel]
    keys = tensor_ops.keys_tensor(np.array([s.keys[i] for _, s, i in kept], dtype=np.uint64), dev)
    tokens = torch.empty(len(kept), dtype=torch.long, device=dev)
    lps = torch.empty(len(kept), dtype=torch.float32, device=dev)
    for temperature, m in _split(kept, lambda s: s.temperature, dev):
        lp = torch.log_softmax(row_logits[m].float() / temperature, dim=-1)
        tokens[m] = tensor_ops.sample_tokens(lp, keys[m])
        lps[m] = lp.gather(-1, tokens[m].unsqueeze(-1)).squeeze(-1)
    hidden = _HIDDEN[0]
    sketches = None
    if hidden is not None and hidden.shape[0] == n_rows:
        h = hidden if whole else hidden[sel]
        sketches = torch.empty((len(kept), SKETCH_DIM), dtype=torch.int16, device=h.device)
        for key, m in _split(kept, lambda s: s.sketch_key, dev):
            sketches[m] = tensor_ops.sketch(h[m], _vectors(key, h.shape[-1], h.device), SKETCH_SCALE)
        sketches = sketches.cpu().numpy()
    # only the protocol's token stays finite: vLLM's sampler, greedy or random, must pick it
    if whole:
        logits.fill_(float("-inf")).scatter_(1, tokens.unsqueeze(-1), 0.0)
    else:
        logits[sel] = float("-inf")
        logits[sel, tokens] = 0.0
    tok_np, lp_np = tokens.cpu().numpy(), lps.cpu().numpy()
    for n, (_, s, i) in enumerate(kept):
        rec = s.record
        rec.tokens[i], rec.logprobs[i] = tok_np[n], lp_np[n]
        if sketches is None:
            rec.errors.append(f"no hidden state for token {i} (compute_logits was not wrapped)")
        else:
            if rec.sketches is None:
                rec.sketches = np.zeros((rec.max_new, sketches.shape[-1]), dtype=np.int16)
            rec.sketches[i] = sketches[n]
        rec.filled[i] = True
    return logits


def _split(kept, attr, device) -> list[tuple[object, object]]:
    """(value, index into kept) for each distinct attr(slot); the index is a full slice (a view,
    no copy) when one value covers every kept row, the usual case."""
    import torch

    groups: dict = {}
    for n, (_, s, _) in enumerate(kept):
        groups.setdefault(attr(s), []).append(n)
    if len(groups) == 1:
        return [(next(iter(groups)), slice(None))]
    return [(v, torch.tensor(members, dtype=torch.long, device=device)) for v, members in groups.items()]


def _timed(step):
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            _TIMING["engine_s"] += time.perf_counter() - started
    return timed


class RollproofWorker:
    """vLLM worker extension (`worker_extension_cls`): keeps the sampled rows' hidden states for
    ProtocolSampler and hands the records back through `collective_rpc`."""

    def rollproof_install(self) -> str:
        model = self.model_runner.get_model() if hasattr(self.model_runner, "get_model") else self.model_runner.model
        if getattr(model, "_rollproof_wrapped", False):
            return "installed"
        original = model.compute_logits

        def compute_logits(hidden_states, *args, **kwargs):
            _HIDDEN[0] = hidden_states
            return original(hidden_states, *args, **kwargs)

        model.compute_logits = compute_logits
        model._rollproof_wrapped = True
        for name in ("execute_model", "sample_tokens"):  # the engine's step, for rollproof_timing
            step = getattr(self, name, None)
            if step is not None:
                setattr(self, name, _timed(step))
        runner = type(self.model_runner).__module__
        return runner

    def rollproof_timing(self, reset: bool = False) -> dict:
        """Seconds in the protocol's sampler and in the engine's steps since the last reset."""
        out = dict(_TIMING)
        if reset:
            _TIMING.update(processor_s=0.0, engine_s=0.0, steps=0)
        return out

    def rollproof_collect(self, ids: list[str]) -> dict:
        out = {}
        with _LOCK:
            for rid in ids:
                rec = _RECORDS.pop(rid, None)
                if rec is None:
                    out[rid] = None
                    continue
                # plain bytes and lists: what crosses vLLM's RPC serialization unchanged
                out[rid] = {"tokens": rec.tokens.tolist(), "logprobs": rec.logprobs.tobytes(),
                            "sketches": None if rec.sketches is None else rec.sketches.tobytes(),
                            "filled": rec.filled.tolist(), "errors": rec.errors[:5]}
        return out

    def rollproof_load_weights(self, path: str) -> int:
        """Load a checkpoint's float32 state dict (HF names) in place through vLLM's own reload,
        which re-runs what loading does after the copy (on a CPU, the linear layers are repacked
        for its kernels: a plain `load_weights` into the repacked parameters fails)."""
        from safetensors.torch import load_file

        tensors = load_file(path)
        # vLLM's in-place reload: the layers get back their checkpoint-format parameters, load the new
        # tensors and are processed again (the CPU build repacks every linear weight into its GEMM
        # kernel's format at load and empties the parameter, so model.load_weights alone fails there)
        self.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        return len(tensors)
