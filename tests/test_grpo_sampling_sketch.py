import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from verification.constants import ADVANTAGE_SCALE, GUMBEL_MARGIN
from verification.grpo import advantages
from verification.sampling import gumbel_noise, sample_token, sampling_gap, token_passes
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


def test_gumbel_noise_is_deterministic_and_gumbel_distributed():
    g = gumbel_noise(b"s" * 32, 0, 0, 50_000)
    assert np.array_equal(g, gumbel_noise(b"s" * 32, 0, 0, 50_000))
    assert not np.array_equal(g, gumbel_noise(b"s" * 32, 1, 0, 50_000))
    assert not np.array_equal(g, gumbel_noise(b"s" * 32, 0, 1, 50_000))
    assert abs(g.mean() - 0.5772) < 0.02 and abs(g.std() - 1.2825) < 0.02


def test_gumbel_max_samples_the_softmax():
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    counts = np.zeros(4)
    for pos in range(4000):
        counts[sample_token(logp, gumbel_noise(b"k" * 32, 0, pos, 4))] += 1
    assert np.allclose(counts / counts.sum(), [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_sampling_gap():
    logp = np.log(np.array([0.6, 0.4]))
    noise = np.zeros(2)
    assert sampling_gap(logp, noise, 0) == 0.0
    assert not token_passes(sampling_gap(logp, noise, 1))
    assert token_passes(GUMBEL_MARGIN) and not token_passes(GUMBEL_MARGIN + 1e-9)


@given(st.integers(0, 2**31))
def test_sketch_scale_invariant_and_separating(seed):
    rng = np.random.default_rng(seed)
    vec = sketch_vectors(b"k" * 32, 64)
    h = rng.normal(size=(5, 64))
    assert np.array_equal(sketch(h, vec), sketch(h * 3.0, vec))
    other = rng.normal(size=(5, 64))
    assert sketch_distance(sketch(h, vec), sketch(other, vec)).max() > 8
