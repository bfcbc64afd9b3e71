"""Where an engine's generation time goes: decoding, and the part of it the proof takes.

`GenerationTiming` is what an engine accumulates over its calls (`engine.timing`); the miner reads
it before and after a window's generation and reports the difference (rollproof_miner_decode_seconds,
rollproof_miner_proof_seconds, rollproof_miner_proof_share). Timing never changes what is generated.

* decode_s: the engine's decoding (prefill and decode forward passes, sampling, the proof's work
  included). HF engine: the wall time of each batch up to its one transfer back to the host. vLLM
  engine: the worker's model steps (execute_model and sample_tokens, miner/vllm_worker.py).
* proof_s: the part of decode_s spent on the proof. HF engine: the noise keys of the batch (PRF
  words), the seeded Gumbel-max choice of each token (what plain sampling would do with one
  multinomial draw) and the sketch of the hidden state. vLLM engine: the protocol's sampler inside
  the decoding pass (its log-softmax, seeded choice, sketch and record keeping).

`Stopwatch` sums spans of such work. On a CUDA device, kernels run after the host has queued them,
so a span is measured between two CUDA events on the stream (the device time from the first of
the span's work to its last, gaps where the device waited for the host included), read once the
batch has been synchronised anyway; elsewhere it is the host's clock around the span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class GenerationTiming:
    decode_s: float = 0.0
    proof_s: float = 0.0
    tokens: int = 0  # completion tokens generated

    def add(self, decode_s: float, proof_s: float, tokens: int) -> None:
        self.decode_s += decode_s
        self.proof_s += proof_s
        self.tokens += tokens

    def copy(self) -> "GenerationTiming":
        return GenerationTiming(self.decode_s, self.proof_s, self.tokens)

    def since(self, earlier: "GenerationTiming") -> "GenerationTiming":
        """What was accumulated after `earlier` (a copy taken then)."""
        return GenerationTiming(self.decode_s - earlier.decode_s, self.proof_s - earlier.proof_s,
                                self.tokens - earlier.tokens)

    @property
    def proof_share(self) -> float | None:
        """proof_s over decode_s (None before anything was decoded)."""
        return self.proof_s / self.decode_s if self.decode_s > 0 else None


class Stopwatch:
    """Sums spans of work on `device` (a torch device or its name): host clock on CPUs, CUDA events
    on CUDA devices (read by `seconds()` after the work was synchronised; it waits for the last
    event otherwise)."""

    def __init__(self, device=None):
        self.device = device
        self.cuda = str(device).startswith("cuda")
        self._host_s = 0.0
        self._events: list = []
        self._open = None

    def _event(self):
        """A CUDA event recorded on the device's current stream (where its work is queued)."""
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(torch.device(self.device)))
        return event

    def start(self) -> None:
        self._open = self._event() if self.cuda else time.perf_counter()

    def stop(self) -> None:
        if self._open is None:
            return
        if self.cuda:
            self._events.append((self._open, self._event()))
        else:
            self._host_s += time.perf_counter() - self._open
        self._open = None

    def host_span(self, seconds: float) -> None:
        """Add work the host did itself (e.g. computing keys on the CPU before they go to the device)."""
        self._host_s += seconds

    def seconds(self) -> float:
        total = self._host_s
        if self._events:
            self._events[-1][1].synchronize()
            total += sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
        return total
