"""The trainer's numerical core: policy logprobs, GRPO loss properties, the guarded optimizer step,
adapter files and the deterministic merge (tiny model; the loss properties on plain tensors)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.adapter_files import (
    adapter_config,
    adapter_from_bytes,
    adapter_tensors,
    adapter_to_bytes,
    load_adapter,
    load_adapter_into,
    lora_delta,
    merge_adapter,
    save_adapter,
    validate_adapter,
)
from trainer.distributed_check import fixed_rows
from trainer.loss import EPS_HIGH, EPS_LOW, grpo_loss
from trainer.policy import LoraSettings, completion_logprobs, make_policy
from trainer.step import TrainConfig, TrainingRow, make_optimizer, train_step
from verification.model import forward_hidden_logits


@pytest.fixture(scope="module")
def rows(tiny):
    return fixed_rows(tiny)


def _perturbed_policy(lm, seed: int = 1, std: float = 0.02):
    """A policy whose adapter is far from zero (B random), so merged weights differ from the base."""
    policy = make_policy(lm)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_adapter_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return policy


def _params(policy):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters()}


def _optimizer_state(optimizer):
    return copy.deepcopy(optimizer.state_dict())


def _assert_bit_identical(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_bit_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_bit_identical(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert a == b


# ---- policy --------------------------------------------------------------------------------------
def test_untrained_policy_logprobs_equal_teacher_forced(tiny):
    policy = make_policy(tiny)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 256, size=n).tolist() for n in (3, 11, 7, 1)]
    completions = [rng.integers(0, 256, size=n).tolist() for n in (9, 2, 14, 5)]
    logp, mask = completion_logprobs(policy, prompts, completions)
    assert logp.requires_grad and logp.dtype == torch.float32
    assert mask.sum(1).tolist() == [len(c) for c in completions]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        (_, full), = tiny.teacher_forced(p, [np.array(c)])
        expected = full[np.arange(len(c)), c]
        # two float32 paths (the LoRA policy's batched forward, the verifier's teacher forcing) agree to
        # float noise: up to 1.2e-5 nats measured when numpy's BLAS is loaded before torch's; the
        # protocol's own tolerance is LOGPROB_ABS_TOL (2e-3), a wrong temperature or mask moves them by >1e-2
        np.testing.assert_allclose(logp[i, :len(c)].detach().numpy(), expected, rtol=0, atol=5e-5)
        assert torch.all(logp[i, len(c):] == 0)
    # the logprobs carry gradients to the adapter (B, since A's gradient is B-weighted and B = 0)
    with torch.enable_grad():  # verification.model disables grad globally when it loads a model
        logp[mask].sum().backward()
    grads = {n: p.grad for n, p in policy.named_adapter_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(float(g.abs().max()) > 0 for n, g in grads.items() if "lora_B" in n)


def test_policy_logprobs_at_other_temperature(tiny):
    policy = make_policy(tiny)
    assert policy.temperature == tiny.temperature  # the checkpoint's, by default
    t = tiny.temperature + 0.35
    prompt, completion = [5, 9, 200, 3], [17, 250, 4, 4, 90]
    logp, _ = completion_logprobs(policy, [prompt], [completion], temperature=t)
    ids = torch.tensor([prompt + completion])
    _, logits, _ = forward_hidden_logits(tiny, ids, torch.ones_like(ids))
    full = torch.log_softmax(logits[0, len(prompt) - 1:-1] / t, dim=-1)
    expected = full[torch.arange(len(completion)), torch.tensor(completion)]
    torch.testing.assert_close(logp[0].detach(), expected, rtol=0, atol=1e-5)
    at_one, _ = completion_logprobs(policy, [prompt], [completion])
    assert float((at_one - logp).abs().max()) > 1e-3


def test_lora_init_is_seeded_and_leaves_the_base_model_alone(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    a, b = adapter_tensors(make_policy(tiny)), adapter_tensors(make_policy(tiny))
    c = adapter_tensors(make_policy(tiny, LoraSettings(init_seed=1)))
    assert a.keys() == b.keys() == c.keys() and len(a) == 2 * 7 * 4  # A and B x 7 projections x 4 layers
    _assert_bit_identical(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)
    assert all(float(a[k].abs().max()) == 0 for k in a if "lora_B" in k)
    _assert_bit_identical(before, tiny.model.state_dict())
    assert not any("lora" in n for n, _ in tiny.model.named_modules())
    settings = LoraSettings(rank=4, alpha=8)
    t = adapter_tensors(make_policy(tiny, settings))
    assert t["model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 256)
    assert t["model.layers.0.mlp.down_proj.lora_B.weight"].shape == (256, 4)


# ---- loss properties -----------------------------------------------------------------------------
@st.composite
def loss_inputs(draw, min_adv=-3.0, max_adv=3.0):
    b = draw(st.integers(1, 4))
    c = draw(st.integers(1, 6))
    floats = st.floats(-8.0, 0.0, allow_nan=False, width=32)
    new = torch.tensor(draw(st.lists(floats, min_size=b * c, max_size=b * c)), dtype=torch.float32).view(b, c)
    delta = st.floats(-1.0, 1.0, allow_nan=False, width=32)
    old = (new + torch.tensor(draw(st.lists(delta, min_size=b * c, max_size=b * c))).view(b, c)).clamp(max=0.0)
    lengths = draw(st.lists(st.integers(1, c), min_size=b, max_size=b))
    mask = torch.arange(c).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    adv = torch.tensor(draw(st.lists(st.floats(min_adv, max_adv, allow_nan=False, width=32), min_size=b, max_size=b)))
    return new, old, adv, mask


@settings(max_examples=60)
@given(loss_inputs())
def test_zero_advantages_give_zero_loss_and_zero_gradient(inputs):
    new, old, adv, mask = inputs
    new = new.clone().requires_grad_(True)
    with torch.enable_grad():  # verification.model disables grad globally when it loads a model
        out = grpo_loss(new, old, torch.zeros_like(adv), mask)
        assert float(out.loss) == 0.0 and float(out.policy_loss) == 0.0
        out.loss.backward()
    assert torch.all(new.grad == 0)
    assert out.stats.n_clipped == 0 and out.stats.mean_abs_advantage == 0


@settings(max_examples=60)
@given(loss_inputs())
def test_at_ratio_one_the_gradient_is_the_policy_gradient(inputs):
    new, _, adv, mask = inputs
    new = new.clone().requires_grad_(True)
    with torch.enable_grad():
        out = grpo_loss(new, new.detach().clone(), adv, mask)
        out.loss.backward()
    n = float(mask.sum())
    expected = torch.where(mask, -adv.unsqueeze(1).expand_as(new) / n, torch.zeros_like(new))
    torch.testing.assert_close(new.grad, expected, rtol=1e-6, atol=1e-7)
    assert out.stats.n_clipped == 0 and out.stats.mean_ratio == pytest.approx(1.0)
    assert out.stats.approx_kl == pytest.approx(0.0, abs=1e-12)
    assert float(out.loss) == pytest.approx(float(-(adv.unsqueeze(1) * mask).sum() / n), rel=1e-5, abs=1e-6)


@settings(max_examples=80)
@given(loss_inputs())
def test_clipped_tokens_contribute_no_gradient(inputs):
    new, old, adv, mask = inputs
    new = new.clone().requires_grad_(True)
    with torch.enable_grad():  # verification.model disables grad globally when it loads a model
        out = grpo_loss(new, old, adv, mask)
        out.loss.backward()
    ratio = torch.exp(new.detach() - old)
    a = adv.unsqueeze(1).expand_as(ratio)
    clipped = mask & (((a > 0) & (ratio > 1 + EPS_HIGH)) | ((a < 0) & (ratio < 1 - EPS_LOW)))
    assert torch.all(new.grad[clipped] == 0)
    assert torch.all(new.grad[~mask] == 0)
    free = mask & ~clipped
    n = float(mask.sum())
    torch.testing.assert_close(new.grad[free], (-a * ratio / n)[free], rtol=1e-5, atol=1e-7)
    assert out.stats.n_clipped == float(clipped.sum())
    assert out.stats.clipped_share == pytest.approx(float(clipped.sum()) / n)
    # the value is PPO's min(r A, clip(r) A)
    objective = torch.minimum(ratio * a, ratio.clamp(1 - EPS_LOW, 1 + EPS_HIGH) * a)
    assert float(out.loss) == pytest.approx(float(-(objective * mask).sum() / n), rel=1e-5, abs=1e-6)
    assert out.stats.approx_kl >= -1e-7


@settings(max_examples=40)
@given(loss_inputs(), st.floats(0.01, 1.0))
def test_kl_term_is_k3_and_zero_at_the_reference(inputs, coef):
    new, old, adv, mask = inputs
    base = grpo_loss(new, old, adv, mask)
    at_ref = grpo_loss(new, old, adv, mask, kl_coef=coef, ref_logprobs=new.clone())
    assert float(at_ref.kl) == pytest.approx(0.0, abs=1e-7)
    ref = (new - 0.3).clamp(max=0.0)
    with_kl = grpo_loss(new, old, adv, mask, kl_coef=coef, ref_logprobs=ref)
    d = ref - new
    k3 = ((torch.exp(d) - d - 1) * mask).sum() / mask.sum()
    assert float(with_kl.kl) == pytest.approx(float(k3), rel=1e-5, abs=1e-7) and float(with_kl.kl) >= 0
    assert float(with_kl.loss) == pytest.approx(float(base.loss) + coef * float(k3), rel=1e-5, abs=1e-6)


@settings(max_examples=40)
@given(loss_inputs(), st.data())
def test_micro_batch_losses_with_the_global_token_count_sum_to_the_batch_loss(inputs, data):
    new, old, adv, mask = inputs
    split = data.draw(st.integers(0, new.shape[0]))
    whole = grpo_loss(new, old, adv, mask)
    n = float(mask.sum())
    parts = [grpo_loss(new[s], old[s], adv[s], mask[s], n_tokens=n)
             for s in (slice(0, split), slice(split, None)) if mask[s].any()]
    assert sum(float(p.loss) for p in parts) == pytest.approx(float(whole.loss), rel=1e-5, abs=1e-6)
    total = parts[0].stats
    for p in parts[1:]:
        total = total + p.stats
    assert total.n_tokens == whole.stats.n_tokens and total.n_clipped == whole.stats.n_clipped


def test_policy_gradient_through_the_model(tiny, rows):
    """At ratio 1 the loss gradient w.r.t. the adapter is -(1/N) sum_i A_i grad(sum_t logp_it)."""
    policy = make_policy(tiny)
    sub = rows[:4]
    logp, mask = completion_logprobs(policy, [r.prompt for r in sub], [r.completion for r in sub])
    adv = torch.tensor([r.advantage for r in sub])
    params = policy.adapter_parameters()
    with torch.enable_grad():
        loss = grpo_loss(logp, logp.detach(), adv, mask).loss
        got = torch.autograd.grad(loss, params, retain_graph=True)
        pg = -(adv.unsqueeze(1) * torch.where(mask, logp, torch.zeros_like(logp))).sum() / mask.sum()
        want = torch.autograd.grad(pg, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-9)
    assert any(float(w.abs().max()) > 0 for w in want)


# ---- the step ------------------------------------------------------------------------------------
def test_training_row_from_protocol_and_validation():
    row = TrainingRow.from_protocol([1, 2], [3, 4, 5], [-0.5, -1.0, -2.0], -1_250_000)
    assert row.advantage == -1.25 and row.behaviour_logprobs.dtype == np.float32
    with pytest.raises(ValueError):
        TrainingRow([1], [3, 4], [-0.5], 0.0)
    with pytest.raises(ValueError):
        TrainingRow([1], [3], [0.5], 0.0)
    with pytest.raises(ValueError):
        TrainingRow([], [3], [-0.5], 0.0)


def test_normal_step_changes_only_the_adapter(tiny, rows):
    policy = make_policy(tiny)
    optimizer = make_optimizer(policy)
    before = _params(policy)
    result = train_step(policy, optimizer, rows)
    assert result.applied and result.reason == "applied"
    assert result.n_rows == len(rows) and result.n_tokens == sum(len(r.completion) for r in rows)
    assert 0 < result.grad_norm < 100 and 0 <= result.clipped_share < 0.5
    after = _params(policy)
    trainable = {n for n, _ in policy.named_adapter_parameters()}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)
    assert len(optimizer.state) == len(trainable)
    assert all(p.grad is None for p in policy.adapter_parameters())


def test_micro_batching_does_not_change_the_step(tiny, rows):
    results, weights = [], []
    for mb in (1, 5, len(rows)):
        policy = make_policy(tiny)
        optimizer = torch.optim.SGD(policy.adapter_parameters(), lr=0.1)
        results.append(train_step(policy, optimizer, rows, TrainConfig(micro_batch_size=mb)))
        weights.append(adapter_tensors(policy))
    for r, w in zip(results[1:], weights[1:]):
        assert r.grad_norm == pytest.approx(results[0].grad_norm, rel=1e-5)
        # the loss is a sum of per-token terms of size ~1 that nearly cancel (advantages have zero
        # mean): float32 summation order moves it by ~1e-7 absolute, not relative to the small total
        assert r.loss == pytest.approx(results[0].loss, rel=1e-5, abs=1e-6)
        assert r.clipped_share == results[0].clipped_share
        for k in w:
            torch.testing.assert_close(w[k], weights[0][k], rtol=0, atol=1e-7)


def test_absurd_advantages_trip_the_grad_norm_breaker_and_change_nothing(tiny, rows):
    policy = make_policy(tiny)
    optimizer = make_optimizer(policy)
    assert train_step(policy, optimizer, rows).applied  # non-empty optimizer state to protect
    params, state = _params(policy), _optimizer_state(optimizer)
    absurd = [TrainingRow(r.prompt, r.completion, r.behaviour_logprobs, r.advantage * 1e6) for r in rows]
    result = train_step(policy, optimizer, absurd)
    assert not result.applied and "grad_norm" in result.reason.split(";")
    assert result.grad_norm > 100
    _assert_bit_identical(params, _params(policy))
    _assert_bit_identical(state, _optimizer_state(optimizer))
    assert all(p.grad is None for p in policy.adapter_parameters())
    # and the next sane batch steps from exactly where the first left off
    assert train_step(policy, optimizer, rows).applied
    assert int(optimizer.state_dict()["state"][0]["step"]) == 2


def test_huge_learning_rate_trips_the_breakers_on_the_next_batch(tiny, rows):
    policy = make_policy(tiny)
    config = TrainConfig(lr=0.1)
    optimizer = make_optimizer(policy, config)
    first = train_step(policy, optimizer, rows, config)
    assert first.applied  # the first step's gradient was fine; the rate was not
    params, state = _params(policy), _optimizer_state(optimizer)
    second = train_step(policy, optimizer, rows, config)
    assert not second.applied
    assert "clipped_share" in second.reason.split(";") and second.clipped_share > 0.5
    _assert_bit_identical(params, _params(policy))
    _assert_bit_identical(state, _optimizer_state(optimizer))


def test_step_with_kl_term(tiny, rows):
    policy = make_policy(tiny)
    optimizer = make_optimizer(policy)
    sub = rows[:4]
    assert train_step(policy, optimizer, sub).applied  # the adapter now differs from the base
    adapter, state = adapter_tensors(policy), _optimizer_state(optimizer)
    plain = train_step(policy, optimizer, sub)
    load_adapter_into(policy, adapter, adapter_config(policy))
    optimizer.load_state_dict(state)
    with_kl = train_step(policy, optimizer, sub, TrainConfig(kl_coef=0.1))
    assert plain.applied and with_kl.applied
    assert with_kl.approx_kl == pytest.approx(plain.approx_kl, rel=1e-6)  # same state, same ratios
    assert with_kl.loss > plain.loss  # plus 0.1 x a positive KL to the base model
    assert with_kl.grad_norm != plain.grad_norm


# ---- adapter files and merge ---------------------------------------------------------------------
def test_adapter_file_round_trip(tiny, tmp_path):
    policy = _perturbed_policy(tiny)
    tensors, config = adapter_tensors(policy), adapter_config(policy)
    assert all(re.fullmatch(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight", k) for k in tensors)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors.values())
    size = save_adapter(tmp_path / "a.safetensors", tensors, config)
    assert size == (tmp_path / "a.safetensors").stat().st_size
    loaded, loaded_config = load_adapter(tmp_path / "a.safetensors")
    assert loaded_config == config == LoraSettings().to_dict()
    _assert_bit_identical(tensors, loaded)
    assert adapter_to_bytes(tensors, config) == adapter_to_bytes(dict(reversed(list(tensors.items()))), config)
    # safetensors writes metadata keys in (randomised) hash-map order: the bytes must not depend on it
    assert {adapter_to_bytes(tensors, config) for _ in range(8)} == {(tmp_path / "a.safetensors").read_bytes()}
    fresh = make_policy(tiny)
    load_adapter_into(fresh, loaded, loaded_config)
    _assert_bit_identical(adapter_tensors(fresh), tensors)


def test_bad_adapters_are_refused(tiny):
    policy = make_policy(tiny)
    tensors, config = adapter_tensors(policy), adapter_config(policy)
    name = "model.layers.0.self_attn.q_proj.lora_A.weight"
    with pytest.raises(ValueError):
        validate_adapter(tensors, config | {"rank": 8})
    with pytest.raises(ValueError):
        validate_adapter(tensors | {name: tensors[name].double()}, config)
    with pytest.raises(ValueError):
        validate_adapter({("base_model.model." + k): v for k, v in tensors.items()}, config)
    with pytest.raises(ValueError):
        validate_adapter({k: v for k, v in tensors.items() if k != name}, config)
    with pytest.raises(ValueError):
        adapter_from_bytes(b"\x00" * 16)


def test_merged_model_logits_equal_the_peft_model(tiny):
    policy = _perturbed_policy(tiny)
    tensors, config = adapter_tensors(policy), adapter_config(policy)
    base_before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    merged = merge_adapter(tiny.model, tensors, config)
    _assert_bit_identical(base_before, tiny.model.state_dict())
    assert not any("lora" in n for n, _ in merged.named_modules())
    ids = torch.tensor([[3, 77, 12, 200, 5, 9, 31, 250, 1, 0, 42]])
    mask = torch.ones_like(ids)
    peft_logits = policy.model(input_ids=ids, attention_mask=mask).logits
    merged_logits = merged(input_ids=ids, attention_mask=mask).logits
    base_logits = tiny.model(input_ids=ids, attention_mask=mask).logits
    assert float((peft_logits - base_logits).abs().max()) > 1e-2  # the adapter matters
    # Same function within 1e-5: evaluated in float64, the only difference left is the merge's own
    # rounding of W + s*B@A to float32 (measured 2.6e-6 at logits of magnitude 11).
    merged64, peft64 = copy.deepcopy(merged).double(), copy.deepcopy(policy.model).double()
    torch.testing.assert_close(merged64(input_ids=ids, attention_mask=mask).logits,
                               peft64(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=1e-5)
    # In float32 each forward alone is ~8e-6 from the float64 result at this logit scale, so the two
    # float32 forwards (x W'^T vs x W^T + s (x A^T) B^T) agree to about 1.2e-5: allow 5e-5.
    torch.testing.assert_close(merged_logits, peft_logits, rtol=0, atol=5e-5)


def test_merge_is_deterministic_and_equals_the_formula(tiny):
    policy = _perturbed_policy(tiny, seed=7)
    tensors, config = adapter_tensors(policy), adapter_config(policy)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = merge_adapter(tiny.model, tensors, config).state_dict()
        torch.set_num_threads(2)
        two = merge_adapter(tiny.model, tensors, config).state_dict()
    finally:
        torch.set_num_threads(threads)
    _assert_bit_identical(one, two)
    key = "model.layers.2.mlp.up_proj"
    a, b = tensors[key + ".lora_A.weight"], tensors[key + ".lora_B.weight"]
    expected = tiny.model.get_submodule(key).weight + (b.double() @ a.double()).float() * 2.0
    torch.testing.assert_close(one[key + ".weight"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(lora_delta(a, b, 2.0), (b @ a) * 2.0, rtol=0, atol=1e-6)
    assert not torch.equal(one[key + ".weight"], tiny.model.get_submodule(key).weight)
