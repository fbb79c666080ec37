import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import exploration
from dreamerv2_tf.agent.behavior import Behavior
from dreamerv2_tf.agent.world_model import WorldModel

from conftest import make_batch, make_config, make_spaces

SEED = tf.constant([4, 2], tf.int64)


@pytest.mark.parametrize('discrete', [True, False])
def test_random_behavior_samples_valid_actions(discrete):
    config = make_config('atari', expl_behavior='Random')
    _, act_space = make_spaces(1, 5, discrete)
    behavior = exploration.make(config, act_space, None, None, 'float32')
    assert isinstance(behavior, Behavior)
    assert behavior.train(None, None, None, SEED) == {}
    feat = tf.zeros([7, 3, 11])
    action = behavior.actor(feat).sample(SEED).numpy()
    assert action.shape == (7, 3, 5)
    if discrete:
        assert set(np.unique(action)) <= {0.0, 1.0}
        np.testing.assert_array_equal(action.sum(-1), 1.0)
        # Uniform: over many draws every action occurs.
        many = behavior.actor(tf.zeros([2000, 11])).sample(SEED).numpy()
        assert np.all(many.mean(0) > 0.15)
    else:
        assert np.all((action >= -1) & (action <= 1)) and action.std() > 0.3


def test_plan2explore_reward_is_the_scaled_ensemble_disagreement():
    config = make_config('atari', expl_behavior='Plan2Explore', expl_intr_scale=0.7,
                         disag_models=3)
    assert config.expl_reward_norm.momentum == 1.0 and config.disag_action_cond
    obs_space, act_space = make_spaces(1, 6, True)
    wm = WorldModel(config, obs_space, act_space)
    batch = make_batch(2, 4, obs_space, act_space)
    feat = wm.build(batch, SEED)
    behavior = exploration.make(config, act_space, wm, tf.Variable(0, dtype=tf.int64), 'float32')
    behavior.build(feat, batch, SEED)
    assert len(behavior.heads) == 3 and behavior.heads[0].head.event_shape == (wm.stoch_size,)

    # An imagined sequence, time-major [H + 1, N, ...]; action t led into state t.
    rng = np.random.RandomState(0)
    horizon, n = 5, 4
    seq_feat = rng.randn(horizon + 1, n, wm.feat_size).astype(np.float32)
    seq_action = np.eye(6, dtype=np.float32)[rng.randint(0, 6, (horizon + 1, n))]
    reward = behavior._reward({'feat': tf.constant(seq_feat), 'action': tf.constant(seq_action)})

    # Input for step t: state t and the action taken at t (stored at t + 1), batch-major.
    inputs = np.concatenate([seq_feat[:-1], seq_action[1:]], -1).transpose(1, 0, 2)
    means = np.stack([head(tf.constant(inputs)).mean().numpy() for head in behavior.heads])
    disag = means.std(0).mean(-1)  # [N, H]: population std across heads, mean over the target
    disag = np.concatenate([np.zeros((n, 1)), disag], 1).T  # no reward for the start state
    eps = config.expl_reward_norm.eps  # momentum 1: the norm only divides by 1 + eps
    expected = 0.7 * disag / (1 + eps) * config.expl_reward_norm.scale
    assert reward.shape == (horizon + 1, n)
    np.testing.assert_allclose(reward.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.all(reward.numpy()[1:] > 0)
