import math

import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import distributions as dists

SEED = tf.constant([1, 2], tf.int64)


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_onehot_straight_through_forward_is_hard_and_gradient_is_the_probs():
    logits = tf.Variable(np.random.RandomState(0).randn(5, 4, 7).astype(np.float32))
    weights = tf.constant(np.random.RandomState(1).randn(5, 4, 7).astype(np.float32))
    # Only sample() is straight-through; mode() has no gradient (next test).
    for draw in ('sample',):
        with tf.GradientTape(persistent=True) as tape:
            dist = dists.OneHot(logits, event_dims=1)
            value = dist.sample(SEED) if draw == 'sample' else dist.mode()
            loss = tf.reduce_sum(weights * value)
            reference = tf.reduce_sum(weights * tf.nn.softmax(logits))
        value = value.numpy()
        # Forward: exactly one-hot.
        assert set(np.unique(value)) <= {0.0, 1.0}
        np.testing.assert_array_equal(value.sum(-1), 1.0)
        # Backward: the gradient of the probabilities.
        np.testing.assert_allclose(tape.gradient(loss, logits), tape.gradient(reference, logits),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dist.mode().numpy().argmax(-1), logits.numpy().argmax(-1))


def test_onehot_mode_is_a_plain_one_hot_without_gradient_while_sample_has_one():
    logits = tf.Variable(np.random.RandomState(0).randn(5, 4, 7).astype(np.float32))
    weights = tf.constant(np.random.RandomState(1).randn(5, 4, 7).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        dist = dists.OneHot(logits, event_dims=1)
        mode, sample = dist.mode(), dist.sample(SEED)
        mode_loss = tf.reduce_sum(weights * mode)
        sample_loss = tf.reduce_sum(weights * sample)
    expected = np.eye(7, dtype=np.float32)[logits.numpy().argmax(-1)]
    np.testing.assert_array_equal(mode.numpy(), expected)  # exactly the one-hot argmax
    mode_grad = tape.gradient(mode_loss, logits)
    assert mode_grad is None or not np.any(mode_grad.numpy())
    sample_grad = tape.gradient(sample_loss, logits)
    assert sample_grad is not None and np.any(sample_grad.numpy())


def test_onehot_sampling_frequencies_match_the_probabilities():
    probs = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
    logits = tf.constant(np.log(np.tile(probs, (20000, 1))))
    samples = dists.OneHot(logits).sample(SEED).numpy()
    freq = samples.mean(0)
    # 4 standard errors of a proportion from 20000 draws.
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / 20000))


def test_onehot_log_prob_entropy_kl_vs_numpy():
    rng = np.random.RandomState(0)
    lhs, rhs = rng.randn(3, 32, 32).astype(np.float32), rng.randn(3, 32, 32).astype(np.float32)
    value = np.eye(32, dtype=np.float32)[rng.randint(0, 32, (3, 32))]
    p_log, q_log = np_log_softmax(lhs.astype(np.float64)), np_log_softmax(rhs.astype(np.float64))
    p = np.exp(p_log)
    a, b = dists.OneHot(lhs, event_dims=1), dists.OneHot(rhs, event_dims=1)
    # Summed over the 32 latents (event_dims=1), one number per batch element.
    np.testing.assert_allclose(a.log_prob(value), (value * p_log).sum((-1, -2)), rtol=1e-5)
    np.testing.assert_allclose(a.entropy(), -(p * p_log).sum((-1, -2)), rtol=1e-5)
    np.testing.assert_allclose(a.kl(b), (p * (p_log - q_log)).sum((-1, -2)), rtol=1e-5)
    assert a.kl(b).dtype == tf.float32


def truncnorm_mean(loc, scale, low, high):
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    a, b = (low - loc) / scale, (high - loc) / scale
    return loc + scale * (phi(a) - phi(b)) / (cdf(b) - cdf(a))


@pytest.mark.parametrize('loc, scale', [(0.0, 1.0), (0.8, 0.5), (-0.95, 0.1), (0.3, 2.1)])
def test_trunc_normal_samples_stay_inside_with_the_right_mean(loc, scale):
    count = 40000
    dist = dists.TruncNormal(tf.fill([count], loc), tf.fill([count], scale), -1.0, 1.0)
    samples = dist.sample(SEED).numpy()
    assert samples.min() > -1 and samples.max() < 1
    expected = truncnorm_mean(loc, scale, -1.0, 1.0)
    assert abs(samples.mean() - expected) < 4 * samples.std() / math.sqrt(count)
    assert dist.mode().numpy()[0] == pytest.approx(np.clip(loc, -1, 1))


def test_trunc_normal_clips_with_straight_through_gradient():
    loc = tf.Variable([0.999999] * 4)
    with tf.GradientTape() as tape:
        dist = dists.TruncNormal(loc, tf.fill([4], 0.1), -1.0, 1.0)
        sample = dist.sample(SEED)
        loss = tf.reduce_sum(sample)
    assert np.all(sample.numpy() <= 1 - 1e-6)
    grad = tape.gradient(loss, loc).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad > 0)  # reparameterised: samples follow loc


def test_bernoulli_soft_target_log_prob_vs_numpy():
    logits = np.array([-2.0, 0.0, 3.0], np.float32)
    target = np.array([0.999, 0.5, 0.0], np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = target * np.log(p) + (1 - target) * np.log(1 - p)
    np.testing.assert_allclose(dists.Bernoulli(logits).log_prob(target), expected, rtol=1e-5)
    np.testing.assert_allclose(dists.Bernoulli(logits).mean(), p, rtol=1e-6)


def test_mse_is_half_squared_error_summed_over_event_dims():
    mean = np.random.RandomState(0).randn(2, 4, 4, 1).astype(np.float32)
    value = np.random.RandomState(1).randn(2, 4, 4, 1).astype(np.float32)
    expected = -0.5 * ((value - mean) ** 2).sum((1, 2, 3))
    np.testing.assert_allclose(dists.MSE(mean, event_dims=3).log_prob(value), expected, rtol=1e-5)
    # Same gradient as the Gaussian with unit std: they differ by a constant only.
    normal = dists.Normal(mean, 1.0, event_dims=3).log_prob(value).numpy()
    np.testing.assert_allclose(normal - expected, -0.5 * math.log(2 * math.pi) * 16, rtol=1e-5)


def test_tanh_normal_against_monte_carlo():
    mean, std = np.array([0.3, -1.5, 2.0], np.float32), np.array([0.5, 1.0, 0.2], np.float32)
    dist = dists.TanhNormal(mean, std)
    x = np.random.RandomState(0).randn(400000, 3) * std + mean
    y = np.tanh(x)
    np.testing.assert_allclose(dist.mean(), y.mean(0), atol=3e-3)
    # Entropy of tanh(X) = H(X) + E[log(1 - tanh(X)^2)].
    normal_entropy = 0.5 * np.log(2 * np.pi * np.e * std.astype(np.float64) ** 2)
    expected = normal_entropy + np.log(1 - y ** 2).mean(0)
    np.testing.assert_allclose(dist.entropy(), expected, atol=5e-3)
    # Change of variables: log p(y) = log N(atanh y) - log(1 - y^2).
    value = np.array([0.2, -0.9, 0.95], np.float32)
    pre = np.arctanh(value.astype(np.float64))
    normal_logp = -0.5 * ((pre - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(dist.log_prob(value), normal_logp - np.log(1 - value ** 2.0),
                               rtol=1e-4)
    np.testing.assert_allclose(dist.mode(), np.tanh(mean), rtol=1e-6)
