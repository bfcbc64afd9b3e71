import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verification import cpu_kernels, sampling, tensor_ops
from verification.constants import ADVANTAGE_SCALE, GUMBEL_MARGIN, SKETCH_SCALE
from verification.grpo import advantages
from verification.sampling import gumbel_noise, noise_keys, noise_uniforms, sample_token, sampling_gap, token_passes
from verification.sketch import sketch, sketch_distance, sketch_vectors


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=16))
def test_advantages_properties(rewards):
    adv = advantages(rewards)
    assert len(adv) == len(rewards)
    assert abs(sum(adv)) <= len(adv)  # zero mean up to rounding
    if len(set(rewards)) == 1:
        assert all(a == 0 for a in adv)
    order = sorted(range(len(rewards)), key=lambda i: rewards[i])
    assert [adv[i] for i in order] == sorted(adv)  # monotone in reward
    assert all(abs(a) <= 4 * ADVANTAGE_SCALE for a in adv)
    assert adv == advantages(list(rewards))


def test_noise_is_deterministic_prefix_stable_and_gumbel_distributed():
    keys = noise_keys(b"s" * 32, 0, 50)
    assert np.array_equal(keys, noise_keys(b"s" * 32, 0, 50))
    assert np.array_equal(keys[:7], noise_keys(b"s" * 32, 0, 7))  # a longer rollout extends the stream
    assert not np.array_equal(keys, noise_keys(b"s" * 32, 1, 50))
    g = gumbel_noise(int(keys[0]), 50_000)
    assert np.array_equal(g, gumbel_noise(int(keys[0]), 50_000))
    assert not np.array_equal(g, gumbel_noise(int(keys[1]), 50_000))
    assert abs(g.mean() - 0.5772) < 0.02 and abs(g.std() - 1.2825) < 0.02


def test_gumbel_max_samples_the_softmax():
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    counts = np.zeros(4)
    for key in noise_keys(b"k" * 32, 0, 4000):
        counts[sample_token(logp, gumbel_noise(int(key), 4))] += 1
    assert np.allclose(counts / counts.sum(), [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_sampling_gap():
    logp = np.log(np.array([0.6, 0.4]))
    noise = np.zeros(2)
    assert sampling_gap(logp, noise, 0) == 0.0
    assert not token_passes(sampling_gap(logp, noise, 1))
    assert token_passes(GUMBEL_MARGIN) and not token_passes(GUMBEL_MARGIN * 1.0001)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 3000))
def test_tensor_noise_bits_equal_the_numpy_reference(key, vocab):
    """The int64 tensor arithmetic (what runs on the model's device) gives the uint64 reference's
    uniforms bit for bit; the float64 noise agrees to the logarithms' last ulp."""
    kt = tensor_ops.keys_tensor(np.array([key], dtype=np.uint64), "cpu")
    assert np.array_equal(tensor_ops.noise_uniforms(kt, vocab)[0].numpy(), noise_uniforms(key, vocab))
    np.testing.assert_allclose(tensor_ops.gumbel_noise(kt, vocab)[0].numpy(), gumbel_noise(key, vocab), rtol=1e-14, atol=1e-15)


logprob_rows = st.integers(2, 300).flatmap(lambda v: st.lists(
    st.lists(st.floats(-30, 5, allow_nan=False, width=32), min_size=v, max_size=v), min_size=1, max_size=6))


@settings(max_examples=100, deadline=None)
@given(logprob_rows, st.integers(0, 2**32))
def test_tensor_rule_matches_the_numpy_reference(rows, seed):
    """verification/tensor_ops.py picks the reference's token on every row with gap 0, and its gaps
    for other tokens equal the reference's."""
    logp = torch.log_softmax(torch.tensor(rows, dtype=torch.float32), dim=-1)
    keys = noise_keys(seed.to_bytes(8, "big"), 0, len(rows))
    kt = tensor_ops.keys_tensor(keys, "cpu")
    got = tensor_ops.sample_tokens(logp, kt)
    lp = logp.numpy()
    v = lp.shape[-1]
    assert got.tolist() == [sample_token(lp[i], gumbel_noise(int(keys[i]), v)) for i in range(len(rows))]
    assert np.all(tensor_ops.sampling_gap(logp, kt, got).numpy() == 0.0)
    other = (got + 1) % v
    ref = [sampling_gap(lp[i], gumbel_noise(int(keys[i]), v), int(other[i])) for i in range(len(rows))]
    np.testing.assert_allclose(tensor_ops.sampling_gap(logp, kt, other).numpy(), np.array(ref), rtol=0, atol=1e-12)


@given(st.integers(0, 2**31))
def test_sketch_scale_invariant_and_separating(seed):
    rng = np.random.default_rng(seed)
    vec = sketch_vectors(b"k" * 32, 64)
    h = rng.normal(size=(5, 64))
    assert np.array_equal(sketch(h, vec), sketch(h * 3.0, vec))
    other = rng.normal(size=(5, 64))
    assert sketch_distance(sketch(h, vec), sketch(other, vec)).max() > 8


@given(st.integers(0, 2**31))
def test_tensor_sketch_matches_the_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    vec = sketch_vectors(b"k" * 32, 96)
    h = rng.normal(size=(7, 96)).astype(np.float32)
    got = tensor_ops.sketch(torch.from_numpy(h), torch.from_numpy(vec), SKETCH_SCALE).numpy()
    # float64 dot products in another summation order can land on the other side of a rounding
    # boundary: at most one unit, against a tolerance of SKETCH_TOL
    assert sketch_distance(got, sketch(h, vec)).max() <= 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 5000))
def test_top_bucket_is_the_uniforms_above_its_edge(key, vocab):
    """The candidate filter's top bucket, from the hash without its last step, is exactly the
    entries whose reference uniform is above 1 - 2^-TOP_BITS."""
    kt = tensor_ops.keys_tensor(np.array([key], dtype=np.uint64), "cpu")
    edge = noise_uniforms(key, vocab) > 1.0 - 2.0 ** -tensor_ops.TOP_BITS
    for top in (tensor_ops._top_bucket_torch(kt, vocab)[0].numpy().copy(),
                tensor_ops._top_bucket_numpy(kt.numpy().view(np.uint64), vocab, kt.device)[0].copy()):
        assert not top[vocab:].any()
        assert np.array_equal(top[:vocab], edge)
    counters = tensor_ops._counters(vocab, kt.device).numpy().view(np.uint64)
    rows, cols = cpu_kernels.top_bucket_entries(kt.numpy().view(np.uint64), counters, vocab, tensor_ops._TOP_PATTERN)
    assert np.array_equal(rows, np.zeros(len(cols), np.int64)) and np.array_equal(cols, np.flatnonzero(edge))


def test_the_compiled_passes_run_on_a_cpu():
    """numba is a dependency: on a CPU the filter's V-wide passes are the compiled loops."""
    assert cpu_kernels.available()
    assert tensor_ops._default_backend(torch.device("cpu")) == "numba"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 700), st.integers(0, 2**32), st.floats(-3.0, 3.0))
def test_compiled_passes_select_the_numpy_passes_entries(n, vocab, seed, shift):
    """Both compiled passes give the (row, col) pairs of the numpy passes, row-major, also when the
    first output arrays are too small (the call is repeated at the returned size), for rows the
    at-least pass skips (threshold above the row's maximum), with -inf entries, and with the rows
    split across 1-4 threads (the split forced down to every batch size here)."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**64, n, dtype=np.uint64)
    counters = tensor_ops._counters(vocab, torch.device("cpu")).numpy().view(np.uint64)
    low = np.uint64(rng.integers(0, 2**64, dtype=np.uint64))  # a wide bucket: many entries, overflowing the guess
    lp = rng.standard_normal((n, vocab)).astype(np.float32)
    lp[rng.random((n, vocab)) < 0.2] = -np.inf
    row_max = lp.max(axis=-1)
    thresholds = (row_max + np.float32(shift) * rng.random(n).astype(np.float32)).astype(np.float32)
    want_at_least = np.nonzero(lp >= thresholds[:, None])
    rows, cols = tensor_ops._at_least_numpy(lp, thresholds, row_max, torch.device("cpu"))
    assert np.array_equal(rows, want_at_least[0]) and np.array_equal(cols, want_at_least[1])
    split_from = cpu_kernels.PARALLEL_FROM_ENTRIES
    try:
        for threads in (1, 2, 4):
            cpu_kernels.PARALLEL_FROM_ENTRIES = 0 if threads > 1 else split_from
            for pattern in (tensor_ops._TOP_PATTERN, low):
                rows, cols = cpu_kernels.top_bucket_entries(keys, counters, vocab, pattern, threads)
                with np.errstate(over="ignore"):
                    z = counters[None, :] + keys[:, None]
                    z ^= z >> np.uint64(30)
                    z *= np.uint64(sampling.MIX1)
                    z ^= z >> np.uint64(27)
                    z *= np.uint64(sampling.MIX2)
                want = np.nonzero(z >= pattern)
                assert np.array_equal(rows, want[0]) and np.array_equal(cols, want[1])
            rows, cols = cpu_kernels.entries_at_least(lp, thresholds, row_max, threads)
            assert np.array_equal(rows, want_at_least[0]) and np.array_equal(cols, want_at_least[1])
    finally:
        cpu_kernels.PARALLEL_FROM_ENTRIES = split_from


filter_rows = st.tuples(st.integers(1, 3000), st.integers(1, 5), st.sampled_from([0.0, 0.01, 0.3, 2.0, 8.0, 30.0]),
                        st.booleans(), st.integers(0, 2**32))


@settings(max_examples=80, deadline=None)
@given(filter_rows)
def test_candidate_filter_gives_the_full_computations_bits(case):
    """The candidate filter (exact scores of the candidates only), in every backend (numba: a CPU;
    numpy: a CPU without numba; torch: an accelerator), gives the definition's tokens and gaps over every entry bit for bit:
    flat rows (a random-init head), peaked ones, ties of equal logprobs, -inf entries; the chosen
    token's gap is exactly 0. (sample_tokens and sampling_gap use it from FILTER_FROM_ENTRIES
    entries on; below, the definition itself.)"""
    vocab, n, scale, masked, seed = case
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * scale
    if masked:
        logits[:, torch.rand(vocab, generator=g) < 0.3] = -float("inf")
        logits[:, 0] = 0.0
    logp = torch.log_softmax(logits, dim=-1)
    keys = torch.randint(-2**63, 2**63 - 1, (n,), generator=g, dtype=torch.int64)
    tokens = tensor_ops.sample_tokens_full(logp, keys)
    other = torch.randint(0, vocab, (n,), generator=g)
    gaps = tensor_ops.sampling_gap_full(logp, keys, other)
    assert torch.equal(tokens, tensor_ops.sample_tokens(logp, keys))
    assert torch.equal(gaps, tensor_ops.sampling_gap(logp, keys, other))
    for backend in ("numba", "numpy", "torch"):
        assert torch.equal(tensor_ops._filtered_tokens(logp, keys, backend), tokens)
        assert torch.all(tensor_ops._filtered_gaps(logp, keys, tokens, backend) == 0.0)
        assert torch.equal(tensor_ops._filtered_gaps(logp, keys, other, backend), gaps)


def test_candidate_filter_at_full_vocabulary_width():
    """The same at V = 49,152 and 151,936 over positions shaped [rows, positions] like the
    verifier's, with few exact scores per row, and a NaN row taking the full computation."""
    g = torch.Generator().manual_seed(7)
    for vocab in (49_152, 151_936):
        logits = torch.randn(3, 2, vocab, generator=g) * torch.tensor([0.02, 3.0, 12.0]).view(3, 1, 1)
        logp = torch.log_softmax(logits, dim=-1)
        keys = torch.randint(-2**63, 2**63 - 1, (3, 2), generator=g, dtype=torch.int64)
        tokens = tensor_ops.sample_tokens(logp, keys)
        assert tokens.shape == (3, 2) and torch.equal(tokens, tensor_ops.sample_tokens_full(logp, keys))
        other = (tokens + 1) % vocab
        assert torch.equal(tensor_ops.sampling_gap(logp, keys, other), tensor_ops.sampling_gap_full(logp, keys, other))
        for backend in ("numba", "numpy", "torch"):
            rows, _, _ = tensor_ops._candidate_scores(logp.reshape(6, vocab), keys.reshape(6), backend=backend)
            assert len(rows) < 6 * (vocab // 2 ** tensor_ops.TOP_BITS + 400)
            assert torch.equal(tensor_ops._filtered_tokens(logp.reshape(6, vocab), keys.reshape(6), backend),
                               tokens.reshape(6))
    nan = logp.reshape(6, -1)[:2].clone()
    nan[1, 5] = float("nan")
    k = keys.reshape(6)[:2]
    for backend in ("numba", "numpy", "torch"):
        assert tensor_ops._filtered_tokens(nan, k, backend) is None
        assert tensor_ops._filtered_gaps(nan, k, k * 0, backend) is None
    assert torch.equal(tensor_ops.sample_tokens(nan, k), tensor_ops.sample_tokens_full(nan, k))
    assert tensor_ops.sample_tokens(nan, k)[1].item() == 5


def test_split_passes_work_in_a_forked_child():
    """The row split's thread pool is per process: a child forked after the parent used it gets its
    own pool (an inherited one has no threads, and its tasks would never run)."""
    import os
    import signal
    import time

    rng = np.random.default_rng(7)
    keys = rng.integers(0, 2**64, 8, dtype=np.uint64)
    counters = tensor_ops._counters(3000, torch.device("cpu")).numpy().view(np.uint64)
    split_from = cpu_kernels.PARALLEL_FROM_ENTRIES
    cpu_kernels.PARALLEL_FROM_ENTRIES = 0
    try:
        want = cpu_kernels.top_bucket_entries(keys, counters, 3000, tensor_ops._TOP_PATTERN, 2)
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only when the split pass gives the parent's entries
            got = cpu_kernels.top_bucket_entries(keys, counters, 3000, tensor_ops._TOP_PATTERN, 2)
            os._exit(0 if all(np.array_equal(a, b) for a, b in zip(got, want)) else 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child's split pass hung")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        cpu_kernels.PARALLEL_FROM_ENTRIES = split_from
