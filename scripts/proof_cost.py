"""Sampling-proof cost per decode step, side by side in one run (docs/security.md section 4).

For a SmolLM2-135M-shaped Llama with a 49,152-wide head (the default model's shape) and the same
body with a 151,936-wide head (Qwen2.5's vocabulary; random weights: cost does not depend on them),
at batch 1, 16 and 64, with a KV cache of 64 prompt tokens:

  * decode step: one cached forward of one token per row (the model's work; plain sampling is left
    out because torch.multinomial alone costs more than the proof at V = 49,152 on CPU);
  * proof (v3): this protocol's per-step work on the same logits, on the model's device: the rows'
    noise keys (one PRF word per row), the argmax of logprob + counter-based Gumbel noise (the
    candidate filter of verification/tensor_ops.py), the logprob gather and the sketch;
  * proof (v3, full V): the same with the float64 noise of every entry (the definition);
  * proof (v2, for comparison): the previous rule, SHAKE-256 over 4V bytes per row on the host and
    float64 -log(-log(u)), plus the argmax, row by row;
  * inverse-CDF (the cheaper rule measured and rejected for the choice it leaves, docs/security.md):
    one uniform per row, float64 CDF and searchsorted.

Reports each proof's cost per row-token and as a fraction of the decode step, as medians of
interleaved repeats (other work on the machine hits every measure alike).

    python scripts/proof_cost.py [--device cpu|cuda[:N]] [--repeats 7] [--batches 1,16,64] [--vocabs 49152,151936] [--threads N]

Writes reports/proof_cost_<device>[_<N>threads].{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from rich.console import Console

from report_lib import environment, md_table, write
from rollproof.device import add_device_argument, device_or_exit
from verification import tensor_ops
from verification.constants import SKETCH_SCALE
from verification.prf import prf_bytes
from verification.sampling import noise_keys
from verification.sketch import sketch_vectors

VOCABS = (49_152, 151_936)


def smollm2_shaped(vocab: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    _sync(device)
    t, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t, time.process_time() - c


def interleaved(measures: dict, repeats: int, device: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every measure once per repeat, in a rotating order, after one warm-up call each (first-call
    allocations and kernel selection are not the steady state): machine load that comes and goes
    hits all of them alike, so per-repeat ratios are comparable. Returns (wall, CPU) seconds."""
    names = list(measures)
    for fn in measures.values():
        fn()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            w, c = timed(measures[n], device)
            wall[n].append(w)
            cpu[n].append(c)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(ap)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--vocabs", default=",".join(map(str, VOCABS)))
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's); 1 makes the ratios immune to thread-barrier stalls on a shared machine")
    args = ap.parse_args()
    dev = device_or_exit(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    console = Console()
    torch.set_grad_enabled(False)
    torch.backends.cuda.matmul.allow_tf32 = False
    batches = [int(b) for b in args.batches.split(",")]
    cpu_filter = tensor_ops._default_backend(torch.device(dev)) == "numba"
    rows, results = [], []
    for vocab in (int(v) for v in args.vocabs.split(",")):
        model = smollm2_shaped(vocab, dev)
        vectors = torch.from_numpy(sketch_vectors(b"k" * 32, 576)).to(dev)
        for b in batches:
            ids = torch.randint(0, vocab, (b, args.prompt), device=dev)
            out = model(input_ids=ids, use_cache=True)
            cache = out.past_key_values
            step_ids = torch.randint(0, vocab, (b, 1), device=dev)
            seeds = [bytes([i % 256]) * 32 for i in range(b)]
            position = [0]

            def decode():
                # one cached forward; the cache is cropped back so every repeat is equal work
                o = model(input_ids=step_ids, past_key_values=cache, use_cache=True, output_hidden_states=True)
                cache.crop(-1)
                return o

            o = decode()
            hidden = o.hidden_states[-1][:, -1]
            logp = torch.log_softmax(o.logits[:, -1].float() / 0.7, -1)
            step_keys = tensor_ops.keys_tensor(np.stack([noise_keys(s, 0, 24) for s in seeds]), dev)[:, 0]
            candidates = len(tensor_ops._candidate_scores(logp, step_keys)[0]) / b
            if not torch.equal(tensor_ops.sample_tokens(logp, step_keys), tensor_ops.sample_tokens_full(logp, step_keys)):
                raise AssertionError("the candidate filter picked another token than the full computation")

            def proof(sample):
                def run():
                    keys = tensor_ops.keys_tensor(np.stack([noise_keys(s, 0, 24) for s in seeds]), dev)[:, 0]
                    tok = sample(logp, keys)
                    logp.gather(-1, tok.unsqueeze(-1))
                    tensor_ops.sketch(hidden, vectors, SKETCH_SCALE)
                    tok.cpu()
                return run

            def icdf():
                u = torch.rand(b, dtype=torch.float64, device=dev)
                f = torch.cumsum(logp.double().exp(), -1)
                torch.searchsorted(f / f[:, -1:], u.unsqueeze(-1)).cpu()

            def proof_v2():
                lp = logp.cpu().numpy()
                for i, s in enumerate(seeds):
                    raw = prf_bytes(4 * vocab, "gumbel", s, 0, position[0])
                    g = -np.log(-np.log((np.frombuffer(raw, dtype="<u4").astype(np.float64) + 0.5) * 2.0**-32))
                    int(np.argmax(lp[i].astype(np.float64) + g))

            measures = {"decode": decode, "v3": proof(tensor_ops.sample_tokens),
                        "v3_full": proof(tensor_ops.sample_tokens_full), "v2": proof_v2, "icdf": icdf}
            if cpu_filter:
                # the same filter with its two V-wide passes as numpy ufuncs (where numba is missing)
                measures["v3_numpy"] = proof(lambda lp, k: tensor_ops._filtered_tokens(lp, k, "numpy"))
            t, cpu = interleaved(measures, args.repeats, dev)
            med = {k: statistics.median(v) for k, v in t.items()}
            frac = {k: statistics.median([x / d for x, d in zip(v, t["decode"])]) for k, v in t.items() if k != "decode"}
            frac_cpu = {k: statistics.median([x / d for x, d in zip(v, cpu["decode"])]) for k, v in cpu.items()
                        if k != "decode"}
            r = {"vocab": vocab, "batch": b, "repeats": args.repeats, "times_s": t, "cpu_times_s": cpu,
                 "decode_step_s": med["decode"], "candidates_per_row": candidates,
                 **{f"{k}_ms_per_row_token": 1e3 * med[k] / b for k in frac},
                 **{f"{k}_fraction_of_decode": frac[k] for k in frac},
                 **{f"{k}_cpu_fraction_of_decode": frac_cpu[k] for k in frac_cpu}}
            results.append(r)
            rows.append([f"{vocab:,}", str(b), f"{1e3 * med['decode']:.1f}",
                         f"{r['v3_ms_per_row_token']:.3f}", f"{100 * frac['v3']:.2f} %", f"{100 * frac_cpu['v3']:.2f} %",
                         f"{r['v3_full_ms_per_row_token']:.3f}", f"{100 * frac['v3_full']:.2f} %",
                         f"{100 * frac_cpu['v3_full']:.2f} %",
                         *([f"{r['v3_numpy_ms_per_row_token']:.3f}", f"{100 * frac['v3_numpy']:.2f} %"] if cpu_filter else []),
                         f"{100 * frac['v2']:.1f} %", f"{100 * frac['icdf']:.1f} %", f"{candidates:.0f}"])
            console.print(" | ".join(rows[-1]))
        del model
    headers = ["vocab", "batch", "decode step (ms)", "v3 proof ms/row-token", "v3 / decode (wall)",
               "v3 / decode (CPU)", "v3 full-V ms/row-token", "v3 full-V / decode (wall)", "v3 full-V / decode (CPU)",
               *(["v3 numpy passes ms/row-token", "v3 numpy passes / decode (wall)"] if cpu_filter else []), "v2 / decode", "inverse-CDF / decode", "exact scores per row"]
    md = (f"# Sampling-proof cost per decode step ({dev})\n\nCommand: `python scripts/proof_cost.py --device {dev} "
          f"--repeats {args.repeats} --batches {args.batches} --vocabs {args.vocabs}"
          f"{'' if args.threads is None else f' --threads {args.threads}'}`\n\n"
          f"SmolLM2-135M-shaped Llama (30 layers, d=576, random init), KV cache of {args.prompt} tokens, fp32, "
          f"{torch.get_num_threads()} threads. Every measure runs once per repeat, interleaved in a rotating order; "
          f"times are medians of {args.repeats} repeats and each fraction is the median of the per-repeat ratios to "
          "the decode step of the same repeat, by wall time and by this process's CPU time (which a shared machine's "
          "time slicing does not inflate: with one thread it is the cleanest ratio there; with more it also counts "
          "threads waiting at barriers). Milliseconds are wall medians. v3: one PRF word per row, the candidate filter of "
          "verification/tensor_ops.py (the counter hash over V in integer ops: on a CPU one compiled loop, "
          "verification/cpu_kernels.py; and exact float64 scores of the few entries that can win) + argmax + logprob gather + sketch, on the model's device; it picks the token the full computation "
          "picks (checked here on the measured logits, and tests/test_grpo_sampling_sketch.py). v3 full-V: the same "
          "proof computing the float64 noise of every entry (the definition; the implementation before the filter). "
          "v3 numpy passes (CPU): the filter with its two V-wide passes as numpy uint64 and float32 ufuncs instead of "
          "the compiled loops (what runs where numba is missing; the same tokens). "
          "v2: SHAKE-256 over 4V bytes per row and float64 Gumbel noise on the host, per row. Inverse-CDF: float64 "
          "CDF + searchsorted. Exact scores per row: the entries the filter scores exactly (random-init logits are "
          "nearly flat; SmolLM2's real logits give 139 per row at V = 49,152).\n\n" + md_table(headers, rows))
    name = f"proof_cost_{dev.replace(':', '_')}" + ("" if args.threads is None else f"_{args.threads}threads")
    jp, mp = write(name, {"results": results, "environment": environment(dev)}, md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
