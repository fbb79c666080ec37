"""Actor gradients 'dynamics' and 'both' against NumPy, StreamNorm's running magnitude, the
agent's action noise and soft slow-target updates."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent.actor_critic import ActorCritic, StreamNorm
from dreamerv2_tf.agent.policy import Policy
from dreamerv2_tf.config import Config

from conftest import make_config, make_spaces

HORIZON, BATCH, FEAT, ACTIONS = 6, 5, 40, 6


def make_behavior(flags, step=0, **raw):
    config = make_config('atari', flags=flags)
    if raw:  # values set without the config's type conversion
        config = Config({**config.flat, **raw})
    _, act_space = make_spaces(1, ACTIONS, True)
    ac = ActorCritic(config, act_space, tf.Variable(step, dtype=tf.int64))
    ac.build(tf.zeros([2, FEAT]))
    return ac


def make_seq(seed=0):
    """An imagined trajectory of HORIZON + 1 states and its HORIZON lambda-returns."""
    rng = np.random.RandomState(seed)
    seq = {
        'feat': tf.constant(rng.randn(HORIZON + 1, BATCH, FEAT).astype(np.float32)),
        'action': tf.constant(np.eye(ACTIONS, dtype=np.float32)[
            rng.randint(0, ACTIONS, (HORIZON + 1, BATCH))]),
        'weight': tf.constant(rng.uniform(0.2, 1, (HORIZON + 1, BATCH)).astype(np.float32)),
    }
    return seq, tf.constant(rng.randn(HORIZON, BATCH).astype(np.float32))


def numpy_policy_terms(ac, seq):
    """log p(action) and entropy of the actor on states 0..H-2, from its logits in NumPy."""
    logits = ac.actor(seq['feat'][:-2]).logits.numpy().astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    probs = np.exp(log_probs)
    logp = (seq['action'].numpy()[1:-1] * log_probs).sum(-1)
    entropy = -(probs * log_probs).sum(-1)
    return logp, entropy


def test_dynamics_actor_loss_is_the_negated_weighted_return_plus_entropy():
    ent = 0.05
    ac = make_behavior(['--actor_grad', 'dynamics', '--actor_ent', str(ent)])
    assert ac.actor_grad == 'dynamics'
    seq, target = make_seq()
    with tf.GradientTape() as tape:
        tape.watch(target)
        loss, metrics = ac.actor_loss(seq, target)
    _, entropy = numpy_policy_terms(ac, seq)
    weight = seq['weight'].numpy()[:-2]
    expected = -(weight * (target.numpy()[1:] + ent * entropy)).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics['actor_ent']) == pytest.approx(entropy.mean(), rel=1e-5)
    assert float(metrics['actor_ent_scale']) == pytest.approx(ent)
    assert 'actor_grad_mix' not in metrics
    # The return itself is differentiated (it carries the dynamics gradient): d loss / d R_t.
    grad = tape.gradient(loss, target).numpy()
    np.testing.assert_allclose(grad[0], 0.0)
    np.testing.assert_allclose(grad[1:], -weight / weight.size, rtol=1e-5)


def test_both_actor_loss_mixes_dynamics_and_reinforce_with_the_scheduled_mix():
    ent = 0.02
    # linear(0.2, 0.6, 100) at step 50 is 0.4.
    ac = make_behavior(['--actor_grad', 'both', '--actor_grad_mix', 'linear(0.2,0.6,100)',
                        '--actor_ent', str(ent)], step=50)
    mix = 0.4
    seq, target = make_seq(seed=1)
    with tf.GradientTape() as tape:
        tape.watch(target)
        loss, metrics = ac.actor_loss(seq, target)
    logp, entropy = numpy_policy_terms(ac, seq)
    baseline = ac.slow_critic(seq['feat'][:-2]).mode().numpy()  # slow_baseline: True
    advantage = target.numpy()[1:] - baseline
    weight = seq['weight'].numpy()[:-2]
    objective = mix * target.numpy()[1:] + (1 - mix) * logp * advantage + ent * entropy
    expected = -(weight * objective).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert float(metrics['actor_grad_mix']) == pytest.approx(mix, rel=1e-6)
    # Only the dynamics part reaches the return: the advantage is a stopped gradient.
    grad = tape.gradient(loss, target).numpy()
    np.testing.assert_allclose(grad[0], 0.0)
    np.testing.assert_allclose(grad[1:], -mix * weight / weight.size, rtol=1e-5)
    # With mix 1 the loss is the dynamics loss of the same actor.
    ac_dyn = make_behavior(['--actor_grad', 'both', '--actor_grad_mix', '1.0',
                            '--actor_ent', str(ent)])
    ac_dyn.actor.set_weights(ac.actor.get_weights())
    loss_one, _ = ac_dyn.actor_loss(seq, target)
    assert float(loss_one) == pytest.approx(
        -(weight * (target.numpy()[1:] + ent * entropy)).mean(), rel=1e-5)


def test_reinforce_loss_gives_the_return_no_gradient():
    ac = make_behavior(['--actor_grad', 'reinforce'])
    seq, target = make_seq(seed=2)
    with tf.GradientTape() as tape:
        tape.watch(target)
        loss, _ = ac.actor_loss(seq, target)
    grad = tape.gradient(loss, target)
    assert grad is None or np.allclose(grad.numpy(), 0.0)


@pytest.mark.parametrize('shape', [(), (3,)])
def test_streamnorm_tracks_the_running_mean_magnitude(shape):
    momentum, scale, eps = 0.8, 2.5, 1e-8
    norm = StreamNorm(shape=shape, momentum=momentum, scale=scale, eps=eps, name='test')
    rng = np.random.RandomState(0)
    mag = np.ones(shape)
    for call in range(5):
        inputs = (rng.randn(4, 7, *shape) * (call + 1) + call).astype(np.float32)
        normed, metrics = norm(tf.constant(inputs))
        batch = inputs.astype(np.float64).reshape((-1,) + shape)
        mag = momentum * mag + (1 - momentum) * np.abs(batch).mean(0)
        np.testing.assert_allclose(norm.mag.numpy(), mag, rtol=1e-10)
        expected = inputs / (mag + eps) * scale
        np.testing.assert_allclose(normed.numpy(), expected, rtol=1e-5)
        assert float(metrics['mean']) == pytest.approx(inputs.mean(), rel=1e-4, abs=1e-5)
        assert float(metrics['normed_std']) == pytest.approx(expected.std(), rel=1e-4)
    assert not np.allclose(mag, 1.0)  # the magnitude moved away from its start


def test_streamnorm_with_momentum_one_only_divides_by_one_plus_eps():
    norm = StreamNorm(momentum=1.0, scale=1.0, eps=1e-3)
    inputs = np.array([3.0, -5.0, 7.0], np.float32)
    for _ in range(3):
        normed, _ = norm(tf.constant(inputs))
    np.testing.assert_allclose(normed.numpy(), inputs / 1.001, rtol=1e-6)
    assert float(norm.mag.numpy()) == 1.0


def noise_fn(space):
    """Policy.action_noise bound to a stand-in policy that only has the action space."""
    stub = SimpleNamespace(act_dim=space.shape[0], discrete=space.discrete)
    return lambda action, amount, seed: Policy.action_noise(
        stub, tf.constant(action), amount, tf.constant(seed, tf.int64))


def test_discrete_action_noise_mixes_with_the_uniform_distribution():
    _, act_space = make_spaces(1, ACTIONS, True)
    noise = noise_fn(act_space['action'])
    count, amount = 20000, 0.3
    chosen = np.arange(count) % ACTIONS
    action = np.eye(ACTIONS, dtype=np.float32)[chosen]
    out = noise(action, amount, [3, 4]).numpy()
    np.testing.assert_array_equal(out.sum(-1), 1.0)
    assert set(np.unique(out)) <= {0.0, 1.0}
    # P(output = k | chosen = j) = amount / A + (1 - amount) [k == j].
    expected = amount / ACTIONS + (1 - amount) * np.eye(ACTIONS)
    for j in range(ACTIONS):
        freq = out[chosen == j].mean(0)
        np.testing.assert_allclose(freq, expected[j], atol=0.025)
    kept = (out.argmax(-1) == chosen).mean()
    assert kept == pytest.approx(1 - amount + amount / ACTIONS, abs=0.01)
    # No noise: the action is returned unchanged.
    np.testing.assert_array_equal(noise(action[:10], 0.0, [3, 4]), action[:10])


def test_continuous_action_noise_is_gaussian_and_clipped_to_the_bounds():
    _, act_space = make_spaces(1, 2, False)
    noise = noise_fn(act_space['action'])
    count, amount = 20000, 0.2
    action = np.zeros((count, 2), np.float32)
    action[:, 1] = 0.95  # near the upper bound
    out = noise(action, amount, [5, 6]).numpy()
    assert out.min() >= -1.0 and out.max() <= 1.0
    middle = out[:, 0]
    assert middle.mean() == pytest.approx(0.0, abs=0.01)
    assert middle.std() == pytest.approx(amount, rel=0.03)
    # Near the bound, P(clipped to 1) = P(N(0, amount) > 0.05) = 1 - Phi(0.25).
    at_bound = (out[:, 1] == 1.0).mean()
    phi = 0.5 * (1 + math.erf(0.05 / amount / math.sqrt(2)))
    assert at_bound == pytest.approx(1 - phi, abs=0.015)
    # Different seeds give different noise; the same seed the same.
    again = noise(action, amount, [5, 6]).numpy()
    other = noise(action, amount, [5, 7]).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.allclose(out, other)


def weights(net):
    return [v.numpy().astype(np.float64).copy() for v in net.variables]


def test_soft_slow_target_update_mixes_by_the_fraction_every_period():
    fraction = 0.25
    ac = make_behavior(['--slow_target_update', '2'], slow_target_fraction=fraction)
    assert ac.config.slow_target_fraction == fraction
    ac.update_slow_target()  # update 0: always a hard copy
    for critic, slow in zip(weights(ac.critic), weights(ac.slow_critic)):
        np.testing.assert_array_equal(critic, slow)
    rng = np.random.RandomState(0)
    for round_ in range(2):
        for var in ac.critic.variables:  # the critic moves on, as training would move it
            var.assign(var + rng.randn(*var.shape).astype(np.float32))
        old_slow = weights(ac.slow_critic)
        ac.update_slow_target()  # odd update: not due, nothing changes
        for before, after in zip(old_slow, weights(ac.slow_critic)):
            np.testing.assert_array_equal(before, after)
        critic = weights(ac.critic)
        ac.update_slow_target()  # even update: slow <- f * critic + (1 - f) * slow
        for c, old, new in zip(critic, old_slow, weights(ac.slow_critic)):
            np.testing.assert_allclose(new, fraction * c + (1 - fraction) * old, rtol=1e-5,
                                       atol=1e-6)
        assert not all(np.allclose(c, n) for c, n in zip(critic, weights(ac.slow_critic)))
    assert int(ac.updates) == 5


def test_slow_target_fraction_flag_accepts_a_fraction():
    config = make_config('atari', flags=['--slow_target_fraction', '0.25'])
    assert config.slow_target_fraction == 0.25
