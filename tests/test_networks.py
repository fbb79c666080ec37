import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent import Agent

from conftest import make_config, make_spaces


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.mark.parametrize('block, channels, discrete, expected', [
    # Spec section 19: world model, actor, critic.
    ('atari', 1, True, (19_968_179, 1_133_606, 1_131_601)),
    ('dmc_vision', 3, False, (13_656_772, 976_012, 971_601)),
])
def test_parameter_counts_match_the_spec(block, channels, discrete, expected):
    config = make_config(block, 'full', precision=32)
    obs_space, act_space = make_spaces(channels, 6, discrete)
    agent = Agent(config, obs_space, act_space)
    task = agent.task_behavior
    counts = (count(agent.wm.trainable_variables), count(task.actor.trainable_variables),
              count(task.critic.trainable_variables))
    assert counts == expected
    assert count(task.slow_critic.trainable_variables) == expected[2]
    if block == 'atari':  # spec 19's per-module breakdown
        assert count(agent.wm.encoder.trainable_variables) == 1_549_776
        assert count(agent.wm.rssm.trainable_variables) == 5_657_648
        assert count(agent.wm.heads['decoder'].trainable_variables) == 10_497_553
    # Variable paths are unique: they are the checkpoint keys.
    paths = [v.path for net in agent.networks for v in net.variables]
    assert len(paths) == len(set(paths))


def test_encoder_and_decoder_shapes_and_key_selection():
    obs_space, _ = make_spaces(3, vectors={'position': 5, 'velocity': 2})
    obs_space['log_ignored'] = obs_space['position']
    encoder = networks.Encoder(obs_space, '.*', '.*', cnn_depth=4, mlp_layers=(8,), name='enc')
    decoder = networks.Decoder(obs_space, '.*', '.*', cnn_depth=4, mlp_layers=(8,), name='dec')
    # Rank-3 keys go to the CNN, rank-1 keys to the MLP; scalars and log_ keys to neither.
    assert encoder.cnn_keys == ['image'] and encoder.mlp_keys == ['position', 'velocity']
    obs = {'image': tf.zeros([2, 3, 64, 64, 3]), 'position': tf.zeros([2, 3, 5]),
           'velocity': tf.zeros([2, 3, 2])}
    embed = encoder(obs)
    assert embed.shape == (2, 3, 32 * 4 + 8)  # 2x2x(8*depth) conv output + MLP units
    out = decoder(tf.zeros([2, 3, 10]))
    assert out['image'].mode().shape == (2, 3, 64, 64, 3)
    assert out['position'].mode().shape == (2, 3, 5) and out['velocity'].mode().shape == (2, 3, 2)


def test_gru_cell_matches_a_numpy_reference():
    cell = networks.GRUCell(5, name='gru')
    rng = np.random.RandomState(0)
    inputs, state = rng.randn(3, 4).astype(np.float32), rng.randn(3, 5).astype(np.float32)
    out = cell(inputs, state).numpy()
    kernel, bias = cell.dense.kernel.numpy(), cell.dense.bias.numpy()
    gamma, beta = cell.norm.gamma.numpy(), cell.norm.beta.numpy()
    parts = np.concatenate([inputs, state], -1) @ kernel + bias
    mean, var = parts.mean(-1, keepdims=True), parts.var(-1, keepdims=True)
    parts = (parts - mean) / np.sqrt(var + 1e-3) * gamma + beta
    reset, cand, update = np.split(parts, 3, -1)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    reset = sigmoid(reset)
    cand = np.tanh(reset * cand)
    update = sigmoid(update - 1)
    np.testing.assert_allclose(out, update * cand + (1 - update) * state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('discrete', [4, 0])
def test_rssm_resets_state_and_action_on_is_first(discrete):
    rssm = networks.RSSM(hidden=8, deter=6, stoch=3, discrete=discrete, name='rssm')
    embed, seed = tf.random.normal([2, 7]), tf.constant([3, 4], tf.int64)
    rssm.observe(embed[:, None], tf.zeros([2, 1, 2]), tf.zeros([2, 1], bool), None, seed)
    busy = {k: tf.random.normal(v.shape) for k, v in rssm.initial(2).items()}
    action = tf.ones([2, 2])
    first = tf.constant([True, False])
    post_reset = rssm.obs_step(busy, action, embed, first, seed)
    post_zero = rssm.obs_step(rssm.initial(2), tf.zeros([2, 2]), embed, first, seed)
    post_busy = rssm.obs_step(busy, action, embed, tf.constant([False, False]), seed)
    for key in post_reset:
        # Row 0 starts an episode: as if from the zero state; row 1 continues.
        np.testing.assert_allclose(post_reset[key][0], post_zero[key][0], rtol=1e-6)
        np.testing.assert_allclose(post_reset[key][1], post_busy[key][1], rtol=1e-6)
    assert not np.allclose(post_busy['deter'][0], post_zero['deter'][0])
    feat = rssm.get_feat(post_reset)
    assert feat.shape == (2, rssm.feat_size) == (2, 3 * (discrete or 1) + 6)


@pytest.mark.parametrize('discrete, ensemble', [(4, 1), (4, 3), (0, 2)])
def test_observe_prior_equals_img_step_at_every_step(discrete, ensemble):
    # observe runs the prior heads once on all steps after the recurrence; a loop of img_step
    # (the prior of the step, from the previous posterior) with each step's seed must agree,
    # ensemble member draws included.
    rssm = networks.RSSM(ensemble=ensemble, hidden=8, deter=6, stoch=3, discrete=discrete,
                         name='rssm')
    steps = 9
    embed = tf.random.stateless_normal([2, steps, 5], [1, 2])
    action = tf.random.stateless_normal([2, steps, 2], [3, 4])
    is_first = tf.constant([[True] + [False] * 3 + [True] + [False] * 4] * 2)
    seed = tf.constant([5, 6], tf.int64)
    post, prior = rssm.observe(embed, action, is_first, None, seed)
    state = rssm.initial(2)
    seeds = tf.random.experimental.stateless_split(seed, steps)
    keys = ('logit',) if discrete else ('mean', 'std')
    for t in range(steps):
        keep = 1.0 - tf.cast(is_first[:, t], tf.float32)[:, None]
        masked = {k: v * tf.reshape(keep, [-1] + [1] * (v.shape.rank - 1))
                  for k, v in state.items()}
        prior_seed, _ = networks.split_seed(seeds[t], 2)
        want = rssm.img_step(masked, action[:, t] * keep, prior_seed)
        np.testing.assert_allclose(prior['deter'][:, t], want['deter'], rtol=1e-5, atol=1e-6)
        for key in keys:
            np.testing.assert_allclose(prior[key][:, t], want[key], rtol=1e-5, atol=1e-6)
        state = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t], seeds[t])
        for key in post:
            np.testing.assert_allclose(post[key][:, t], state[key], rtol=1e-5, atol=1e-6)
    assert 'stoch' not in prior
