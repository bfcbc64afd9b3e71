"""Sampling-proof cost per decode step, side by side in one run (docs/security.md section 4).

For a SmolLM2-135M-shaped Llama with a 49,152-wide head (the default model's shape) and the same
body with a 151,936-wide head (Qwen2.5's vocabulary; random weights: cost does not depend on them),
at batch 1, 16 and 64, with a KV cache of 64 prompt tokens:

  * decode step: one cached forward of one token per row (the model's work; plain sampling is left
    out because torch.multinomial alone costs more than the proof at V = 49,152 on CPU);
  * proof (v3): this protocol's per-step work on the same logits, on the model's device: the rows'
    noise keys (one PRF word per row), the counter-based Gumbel noise over V, the argmax, the logprob
    gather and the sketch;
  * proof (v2, for comparison): the previous rule, SHAKE-256 over 4V bytes per row on the host and
    float64 -log(-log(u)), plus the argmax, row by row;
  * inverse-CDF (the cheaper rule measured and rejected for the choice it leaves, docs/security.md):
    one uniform per row, float64 CDF and searchsorted.

Reports each proof's cost per row-token and as a fraction of the decode step.

    python scripts/proof_cost.py [--device cpu|cuda] [--repeats 5] [--batches 1,16,64]

Writes reports/proof_cost_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from rich.console import Console

from report_lib import environment, md_table, write
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


def best_of(fn, repeats: int, device: str) -> float:
    fn()  # warm-up: first-call allocations and kernel selection are not the steady state
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--prompt", type=int, default=64)
    args = ap.parse_args()
    console = Console()
    torch.set_grad_enabled(False)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = args.device
    batches = [int(b) for b in args.batches.split(",")]
    rows, results = [], []
    for vocab in VOCABS:
        model = smollm2_shaped(vocab, dev)
        vectors = torch.from_numpy(sketch_vectors(b"k" * 32, 576)).to(dev)
        for b in batches:
            ids = torch.randint(0, vocab, (b, args.prompt), device=dev)
            out = model(input_ids=ids, use_cache=True)
            cache, last = out.past_key_values, out.logits[:, -1]
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

            def proof_v3():
                keys = tensor_ops.keys_tensor(np.stack([noise_keys(s, 0, 24) for s in seeds]), dev)[:, 0]
                tok = tensor_ops.sample_tokens(logp, keys)
                logp.gather(-1, tok.unsqueeze(-1))
                tensor_ops.sketch(hidden, vectors, SKETCH_SCALE)
                tok.cpu()

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

            t_decode = best_of(decode, args.repeats, dev)
            t_v3 = best_of(proof_v3, args.repeats, dev)
            t_v2 = best_of(proof_v2, max(1, min(args.repeats, 3)), dev)
            t_icdf = best_of(icdf, args.repeats, dev)
            r = {"vocab": vocab, "batch": b, "decode_step_s": t_decode, "proof_v3_s": t_v3, "proof_v2_s": t_v2,
                 "icdf_s": t_icdf, "v3_ms_per_row_token": 1e3 * t_v3 / b, "v2_ms_per_row_token": 1e3 * t_v2 / b,
                 "v3_fraction_of_decode": t_v3 / t_decode, "v2_fraction_of_decode": t_v2 / t_decode,
                 "icdf_fraction_of_decode": t_icdf / t_decode}
            results.append(r)
            rows.append([f"{vocab:,}", str(b), f"{1e3 * t_decode:.1f}", f"{r['v3_ms_per_row_token']:.3f}",
                         f"{100 * r['v3_fraction_of_decode']:.1f} %", f"{r['v2_ms_per_row_token']:.3f}",
                         f"{100 * r['v2_fraction_of_decode']:.1f} %", f"{100 * r['icdf_fraction_of_decode']:.1f} %"])
            console.print(" | ".join(rows[-1]))
        del model
    headers = ["vocab", "batch", "decode step (ms)", "v3 proof ms/row-token", "v3 / decode",
               "v2 proof ms/row-token", "v2 / decode", "inverse-CDF / decode"]
    md = (f"# Sampling-proof cost per decode step ({dev})\n\nCommand: `python scripts/proof_cost.py --device {dev} "
          f"--repeats {args.repeats} --batches {args.batches}`\n\nSmolLM2-135M-shaped Llama (30 layers, d=576), "
          f"KV cache of {args.prompt} tokens, fp32, best of {args.repeats}. v3: one PRF word per row, counter-based "
          "Gumbel noise over V + argmax + logprob gather + sketch, on the model's device. v2: SHAKE-256 over 4V bytes "
          "per row and float64 Gumbel noise on the host, per row. Inverse-CDF: float64 CDF + searchsorted.\n\n" + md_table(headers, rows))
    jp, mp = write(f"proof_cost_{dev.replace(':', '_')}", {"results": results, "environment": environment()}, md)
    console.print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
