import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import Agent

from conftest import make_batch, make_config, make_spaces


def bad_metrics(metrics):
    """NaN anywhere, or a non-finite loss. (A skipped mixed-precision step reports an infinite
    gradient norm by design.)"""
    return {k: float(v) for k, v in metrics.items()
            if np.isnan(float(v)) or (k.endswith('_loss') and not np.isfinite(float(v)))}


def finite_weights(agent):
    return all(np.all(np.isfinite(v.numpy())) for net in agent.networks for v in net.variables)


@pytest.mark.parametrize('precision, jit', [
    (32, True),
    # float16 convolutions have no fast CPU kernels (a transposed conv is ~270x slower than in
    # float32 here); XLA compiles them efficiently, so the float16 run also covers `jit: xla`.
    (16, 'xla'),
])
def test_hundred_steps_on_a_fixed_batch_halve_the_world_model_loss(precision, jit):
    config = make_config('atari', precision=precision, jit=jit)
    obs_space, act_space = make_spaces(1, 6, True)
    agent = Agent(config, obs_space, act_space)
    batch = make_batch(config.dataset.batch, config.dataset.length, obs_space, act_space)
    state = agent.initial_train_state(config.dataset.batch)
    losses = []
    for _ in range(100):
        # Each call starts from the same state: one fixed batch, as the issue asks.
        _, metrics = agent.train(batch, state)
        assert not bad_metrics(metrics), bad_metrics(metrics)
        losses.append(float(metrics['model_loss']))
    assert losses[-1] <= 0.5 * losses[0], (losses[0], losses[-1])
    assert finite_weights(agent)
    assert agent._train_fn.experimental_get_tracing_count() == 1
    if precision == 16:
        assert metrics['model_loss_scale'] > 0
        assert agent.wm.rssm.compute_dtype == 'float16'
        assert agent.wm.encoder.trainable_variables[0].dtype == 'float32'


def test_mixed_precision_in_graph_mode_carries_float16_state():
    config = make_config('dmc_vision', precision=16)
    obs_space, act_space = make_spaces(3, 4, False)
    agent = Agent(config, obs_space, act_space)
    batch = make_batch(2, 8, obs_space, act_space)
    state = agent.initial_train_state(2)
    for _ in range(2):
        state, metrics = agent.train(batch, state)
    assert not bad_metrics(metrics)
    assert state['deter'].dtype == tf.float16 and state['stoch'].dtype == tf.float16
    assert {'model_loss_scale', 'actor_loss_scale', 'critic_loss_scale'} <= set(metrics)
    outputs, _ = agent.policy({k: v[:, 0] for k, v in batch.items()},
                              agent.initial_policy_state(2), 'train')
    assert outputs['action'].dtype == tf.float32


@pytest.fixture(scope='module')
def atari_agent():
    config = make_config('atari')
    obs_space, act_space = make_spaces(1, 6, True)
    agent = Agent(config, obs_space, act_space)
    batch = make_batch(config.dataset.batch, config.dataset.length, obs_space, act_space)
    return agent, batch


def test_train_carries_state_and_reports_the_spec_metrics(atari_agent):
    agent, batch = atari_agent
    state = agent.initial_train_state(batch['image'].shape[0])
    new_state, metrics = agent.train(batch, state)
    expected = {'model_loss', 'model_grad_norm', 'kl_loss', 'image_loss', 'reward_loss',
                'discount_loss', 'model_kl', 'prior_ent', 'post_ent', 'actor_loss',
                'actor_grad_norm', 'critic_loss', 'critic_grad_norm', 'reward_mean', 'reward_std',
                'reward_normed_mean', 'reward_normed_std', 'critic_slow', 'critic_target',
                'actor_ent', 'actor_ent_scale', 'critic'}
    assert expected <= set(metrics)
    assert 'model_loss_scale' not in metrics  # only under mixed precision
    assert new_state['deter'].shape == state['deter'].shape
    assert not np.allclose(new_state['deter'], 0)  # the last posterior, not the zero state


def test_policy_modes_and_reset_on_is_first(atari_agent):
    agent, batch = atari_agent
    obs = {k: v[:3, 5] for k, v in batch.items() if k != 'action'}
    seed = tf.constant([7, 8], tf.int64)
    state = agent.initial_policy_state(3)
    for _ in range(3):  # a state that is not the initial one
        _, state = agent.policy(obs, state, 'train')
    first = dict(obs, is_first=np.array([True, False, False]))
    out_busy, new_busy = agent.policy_step(first, state, 'eval', seed)
    out_zero, new_zero = agent.policy_step(first, agent.initial_policy_state(3), 'eval', seed)
    # Row 0 starts an episode: identical to starting from the initial state; row 1 is not.
    np.testing.assert_allclose(new_busy[0]['deter'][0], new_zero[0]['deter'][0], rtol=1e-6)
    assert not np.allclose(new_busy[0]['deter'][1], new_zero[0]['deter'][1])
    np.testing.assert_array_equal(out_busy['action'][0], out_zero['action'][0])
    # Eval actions are the actor's argmax; the same seed gives the same actions.
    feat = agent.wm.rssm.get_feat(new_busy[0])
    logits = agent.task_behavior.actor(feat).logits.numpy()
    np.testing.assert_array_equal(out_busy['action'].numpy().argmax(-1), logits.argmax(-1))
    again, _ = agent.policy_step(first, state, 'eval', seed)
    np.testing.assert_array_equal(again['action'], out_busy['action'])
    for mode in ('train', 'explore'):
        out, _ = agent.policy(obs, state, mode)
        action = out['action'].numpy()
        np.testing.assert_array_equal(action.sum(-1), 1.0)  # exactly one-hot
    with pytest.raises(ValueError, match="policy mode must be one of train, eval, explore"):
        agent.policy(obs, state, 'greedy')


def test_continuous_actions_stay_in_bounds_and_eager_mode_matches_graph():
    config = make_config('dmc_vision', jit=False)
    obs_space, act_space = make_spaces(3, 4, False)
    agent = Agent(config, obs_space, act_space)
    batch = make_batch(2, 8, obs_space, act_space)
    obs = {k: v[:, 0] for k, v in batch.items() if k != 'action'}
    seed = tf.constant([1, 2], tf.int64)
    out, _ = agent.policy_step(obs, agent.initial_policy_state(2), 'train', seed)
    action = out['action'].numpy()
    assert action.shape == (2, 4) and np.all(np.abs(action) < 1)
    graph = tf.function(agent.policy_step)
    out_graph, _ = graph(obs, agent.initial_policy_state(2), 'train', seed)
    np.testing.assert_allclose(out_graph['action'], action, rtol=1e-5, atol=1e-6)
    _, metrics = agent.train(batch, agent.initial_train_state(2))  # eager train step
    assert not bad_metrics(metrics) and 'image_loss' in metrics
