import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import Agent
from dreamerv2_tf.agent.agent import precision_policy
from dreamerv2_tf.agent.behavior import Behavior
from dreamerv2_tf.config import Config

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
        if losses[-1] <= 0.5 * losses[0]:
            break  # halved within 100 steps: the claim holds, the rest would only cost time
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
    config = agent.config
    state = agent.initial_train_state(batch['image'].shape[0])
    new_state, metrics = agent.train(batch, state)
    values = {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(v) for v in values.values()), values
    # The world model loss is the scaled sum of its parts (atari: kl 0.1, discount 5).
    scales = {k: config.loss_scales.get(k, 1.0) for k in ('kl', 'image', 'reward', 'discount')}
    assert scales['kl'] == 0.1 and scales['discount'] == 5.0
    parts = sum(scale * values[f'{key}_loss'] for key, scale in scales.items())
    assert values['model_loss'] == pytest.approx(parts, rel=1e-5)
    # Without free nats, balanced KL's value is the mean KL(post || prior), which is >= 0.
    assert config.kl.free == 0
    assert values['kl_loss'] == pytest.approx(values['model_kl'], rel=1e-5)
    assert values['model_kl'] >= 0
    # Entropies of categoricals: the actor's 6 actions, the 4 latents of 4 classes.
    assert 0 <= values['actor_ent'] <= np.log(6) + 1e-6
    for key in ('prior_ent', 'post_ent'):
        assert 0 <= values[key] <= 4 * np.log(4) + 1e-5, key
    assert values['actor_ent_scale'] == pytest.approx(1e-3)  # atari actor_ent
    # reward_norm momentum 1: normalisation only divides by 1 + eps.
    assert config.reward_norm.momentum == 1.0
    assert values['reward_normed_mean'] == pytest.approx(values['reward_mean'], rel=1e-6)
    assert values['reward_normed_std'] == pytest.approx(values['reward_std'], rel=1e-6)
    assert values['reward_std'] >= 0
    for key in ('model_grad_norm', 'actor_grad_norm', 'critic_grad_norm'):
        assert values[key] > 0, key
    for key in ('image_loss', 'reward_loss', 'discount_loss', 'actor_loss', 'critic_loss',
                'critic_slow', 'critic_target', 'critic'):
        assert key in values
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


def test_precision_auto_resolves_once_and_is_announced(capsys):
    assert precision_policy(16) == 'mixed_float16' and precision_policy(32) == 'float32'
    gpu = bool(tf.config.list_physical_devices('GPU'))
    assert precision_policy('auto') == ('mixed_float16' if gpu else 'float32')
    agent = Agent(make_config('atari', precision='auto'), *make_spaces(1, 6, True))
    assert agent.dtype == precision_policy('auto') and agent.precision == (16 if gpu else 32)
    assert f'Precision auto: {agent.dtype}' in capsys.readouterr().out


def test_agent_rejects_a_choice_outside_the_modules_tables():
    config = make_config('atari')
    bad = Config({**config.flat, 'clip_rewards': 'cube'})  # Config() itself does not validate
    with pytest.raises(ValueError, match="'clip_rewards' must be one of identity, sign, tanh; "
                                         "got 'cube'"):
        Agent(bad, *make_spaces(1, 6, True))


def test_behaviors_task_first_then_exploration():
    obs_space, act_space = make_spaces(1, 6, True)
    greedy = Agent(make_config('atari'), obs_space, act_space)
    assert list(greedy.behaviors) == ['task'] and greedy.expl_behavior is greedy.task_behavior
    agent = Agent(make_config('atari', expl_behavior='ModelLoss'), obs_space, act_space)
    assert list(agent.behaviors) == ['task', 'expl']
    assert all(isinstance(b, Behavior) for b in agent.behaviors.values())
    names = [o.name for o in agent.optimizers]
    assert names == ['model', 'actor', 'critic', 'actor', 'critic', 'expl']
    batch = make_batch(2, 8, obs_space, act_space)
    _, metrics = agent.train(batch, agent.initial_train_state(2))
    assert {'actor_loss', 'expl_actor_loss', 'expl_expl_loss'} <= set(metrics)


def test_float32_copy_of_a_mixed_precision_policy_holds_its_weights():
    # What `export_every` serves from a mixed-precision run: every encoder, RSSM and actor weight
    # of the float16 policy, in float32. (Keras 3 layers are not tf.Modules; a filter on that
    # once made the copy keep its fresh random weights.)
    from dreamerv2_tf.agent.policy import _by_inner_path, float32_copy
    from dreamerv2_tf.agent.world_model import preprocess
    config = make_config('atari', precision=16)
    obs_space, act_space = make_spaces(1, 6, True)
    agent = Agent(config, obs_space, act_space)
    obs = {k: np.zeros((1,) + obs_space[k].shape, obs_space[k].dtype) for k in agent.input_keys}
    agent.policy(obs, agent.initial_policy_state(1), 'eval')
    copy = float32_copy(agent.acting, lambda o: preprocess(o, config, tf.float32))
    pairs = list(zip([agent.wm.encoder, agent.wm.rssm, agent.behaviors['task'].actor],
                     [copy.encoder, copy.rssm, copy.actors['eval']]))
    for source, target in pairs:
        sources, targets = _by_inner_path(source), _by_inner_path(target)
        # Everything but the RSSM's prior heads, which acting never reads.
        acting = {p for p in sources if not p.startswith(('img_out_', 'img_dist_'))}
        assert set(targets) == acting and len(targets) > 1
        for path, b in targets.items():
            assert b.dtype == tf.float32
            np.testing.assert_array_equal(b.numpy(), tf.cast(sources[path], tf.float32).numpy())
