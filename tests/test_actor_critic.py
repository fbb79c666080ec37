import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent.actor_critic import ActorCritic, lambda_return

from conftest import make_config, make_spaces


def np_lambda_return(reward, value, discount, bootstrap, lambda_):
    """Plain backwards loop of R_t = r_t + d_t ((1 - lambda) v_{t+1} + lambda R_{t+1})."""
    horizon = len(reward)
    returns = np.zeros_like(reward)
    next_return = bootstrap
    for t in reversed(range(horizon)):
        next_value = value[t + 1] if t + 1 < horizon else bootstrap
        returns[t] = reward[t] + discount[t] * ((1 - lambda_) * next_value + lambda_ * next_return)
        next_return = returns[t]
    return returns


def test_lambda_return_matches_a_numpy_loop():
    rng = np.random.RandomState(0)
    reward, value = rng.randn(15, 7), rng.randn(15, 7)
    discount = rng.uniform(0.9, 1.0, (15, 7))
    discount[4, 2] = 0.0  # a terminal inside the horizon
    bootstrap = rng.randn(7)
    args = [x.astype(np.float32) for x in (reward, value, discount, bootstrap)]
    result = lambda_return(*args, 0.95).numpy()
    np.testing.assert_allclose(result, np_lambda_return(reward, value, discount, bootstrap, 0.95),
                               rtol=1e-5, atol=1e-5)
    # lambda = 0 is the one-step TD target; lambda = 1 the discounted Monte Carlo return.
    td = lambda_return(*args, 0.0).numpy()
    next_value = np.concatenate([value[1:], bootstrap[None]])
    np.testing.assert_allclose(td, reward + discount * next_value, rtol=1e-5, atol=1e-5)


@pytest.fixture
def behavior():
    config = make_config('atari', flags=['--slow_target_update', '3'])
    _, act_space = make_spaces(1, 6, True)
    ac = ActorCritic(config, act_space, tf.Variable(0, dtype=tf.int64))
    ac.build(tf.zeros([2, 40]))
    return ac


def weights(net):
    return [v.numpy().copy() for v in net.variables]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_slow_critic_is_hard_copied_every_n_updates(behavior):
    ac = behavior
    assert not same(weights(ac.critic), weights(ac.slow_critic))  # randomly initialised apart
    ac.update_slow_target()  # update 0: copy
    assert same(weights(ac.critic), weights(ac.slow_critic))
    for var in ac.critic.variables:
        var.assign(var + 1.0)
    ac.update_slow_target()  # updates 1 and 2: no copy
    ac.update_slow_target()
    assert not same(weights(ac.critic), weights(ac.slow_critic))
    ac.update_slow_target()  # update 3: copy again
    assert same(weights(ac.critic), weights(ac.slow_critic))
    assert int(ac.updates) == 4


def make_seq(horizon=6, n=5, feat=40, actions=6, seed=0):
    rng = np.random.RandomState(seed)
    return {
        'feat': tf.constant(rng.randn(horizon + 1, n, feat).astype(np.float32)),
        'action': tf.constant(np.eye(actions, dtype=np.float32)[rng.randint(0, actions,
                                                                            (horizon + 1, n))]),
        'weight': tf.constant(rng.uniform(0.5, 1, (horizon + 1, n)).astype(np.float32)),
    }, tf.constant(rng.randn(horizon, n).astype(np.float32))


def test_reinforce_actor_loss_vs_numpy(behavior):
    ac = behavior
    seq, target = make_seq()
    loss, metrics = ac.actor_loss(seq, target)
    logits = ac.actor.head.out(ac.actor.hidden[1](ac.actor.hidden[0](seq['feat'][:-2]))).numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    probs = np.exp(log_probs)
    logp = (seq['action'].numpy()[1:-1] * log_probs).sum(-1)
    baseline = ac.slow_critic(seq['feat'][:-2]).mode().numpy()
    advantage = target.numpy()[1:] - baseline
    entropy = -(probs * log_probs).sum(-1)
    objective = logp * advantage + 1e-3 * entropy  # atari actor_ent
    expected = -(seq['weight'].numpy()[:-2] * objective).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(metrics['actor_ent']) == pytest.approx(entropy.mean(), rel=1e-5)


def test_critic_loss_is_weighted_half_squared_error(behavior):
    ac = behavior
    seq, target = make_seq()
    loss, _ = ac.critic_loss(seq, target)
    value = ac.critic(seq['feat'][:-1]).mode().numpy()
    expected = (0.5 * (target.numpy() - value) ** 2 * seq['weight'].numpy()[:-1]).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
