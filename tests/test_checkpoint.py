import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import Agent
from dreamerv2_tf.run.checkpoint import Checkpoint

from conftest import make_batch, make_config, make_spaces


def snapshot(agent, counters):
    values = {v.path: v.numpy().copy() for net in agent.networks for v in net.variables}
    for opt in agent.optimizers:
        values.update({f'{opt.name}/{i}': v.numpy() for i, v in enumerate(opt.variables)})
    values.update({v.name: v.numpy() for v in agent.state_variables})
    values['rng'] = agent.rng.state.numpy().copy()
    values.update({k: v.numpy() for k, v in counters.items()})
    return values


def test_round_trip_restores_every_variable_optimizer_slot_counter_and_rng(tmp_path):
    # Layer norms everywhere (the crafter block) and an exploration behaviour with its own
    # networks and optimizers: every variable must have its own checkpoint key.
    config = make_config('crafter', expl_behavior='Plan2Explore', precision=16)
    obs_space, act_space = make_spaces(3, 5, True)
    batch = make_batch(2, 8, obs_space, act_space)
    agent = Agent(config, obs_space, act_space)
    agent.step.assign(123)
    agent.train(batch, agent.initial_train_state(2))
    counters = {'updates': tf.Variable(7, dtype=tf.int64)}
    saved = snapshot(agent, counters)
    path = Checkpoint(tmp_path, agent, counters).save()

    fresh = Agent(config, obs_space, act_space)  # other random weights, empty optimizers
    fresh_counters = {'updates': tf.Variable(0, dtype=tf.int64)}
    before = snapshot(fresh, fresh_counters)
    assert Checkpoint(tmp_path, fresh, fresh_counters).restore() == path
    restored = snapshot(fresh, fresh_counters)
    assert restored.keys() == saved.keys()
    differing = [k for k in saved if not np.array_equal(saved[k], before[k])]
    assert len(differing) > 100  # the restore had real work to do
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)
    assert int(fresh.step.numpy()) == 123 and float(fresh.wm.opt.opt.dynamic_scale) > 0
    # Restored RNG: both agents now draw the same random numbers.
    np.testing.assert_array_equal(agent.rng.make_seeds(2), fresh.rng.make_seeds(2))


def test_restoring_into_another_architecture_fails_clearly(tmp_path):
    config = make_config('atari')
    obs_space, act_space = make_spaces(1, 6, True)
    Checkpoint(tmp_path, Agent(config, obs_space, act_space)).save()
    other = Agent(config.update({'rssm.deter': 48}), obs_space, act_space)
    with pytest.raises((ValueError, tf.errors.OpError), match='(?i)shape|match'):
        Checkpoint(tmp_path, other).restore()
    assert Checkpoint(tmp_path / 'empty', other).restore() is None
