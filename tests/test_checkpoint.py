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


# Fallback, optional counters and full disks, on a small stand-in agent -------------------------

class SmallAgent:
    """What `Checkpoint` saves of an agent: one network, step, RNG (no optimizers)."""

    def __init__(self, seed=0):
        import keras
        self.dense = keras.layers.Dense(3, name='dense')
        self.dense.build((None, 2))
        self.networks, self.optimizers = [self.dense], []
        self.step = tf.Variable(0, dtype=tf.int64, name='step')
        self.state_variables = [self.step]
        self.rng = tf.random.Generator.from_seed(seed)


def saves(directory, steps, counters=None):
    """Saves one checkpoint per step value; returns the agent and the paths."""
    agent = SmallAgent()
    checkpoint = Checkpoint(directory, agent, counters)
    paths = []
    for step in steps:
        agent.step.assign(step)
        agent.dense.kernel.assign(np.full((2, 3), float(step), np.float32))
        paths.append(checkpoint.save())
    return agent, paths


@pytest.mark.parametrize('damage', ['truncate', 'index bytes', 'empty data'])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    import logging
    _, (first, second) = saves(tmp_path, [5, 9])
    data = next(tmp_path.glob('ckpt-2.data*'))
    if damage == 'truncate':
        data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    elif damage == 'empty data':
        data.write_bytes(b'')
    else:
        index = tmp_path / 'ckpt-2.index'
        raw = bytearray(index.read_bytes())
        raw[8:40] = bytes(range(32))
        index.write_bytes(bytes(raw))
    fresh = SmallAgent(seed=1)
    caplog.set_level(logging.WARNING, logger='dreamerv2_tf.run.checkpoint')
    checkpoint = Checkpoint(tmp_path, fresh)
    assert checkpoint.restore() == first
    assert int(fresh.step.numpy()) == 5
    np.testing.assert_array_equal(fresh.dense.kernel.numpy(), np.full((2, 3), 5.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'ckpt-2 is unreadable' in warnings[0]
    # The next save replaces the unreadable checkpoint and keeps the good one.
    assert checkpoint.save() == second
    assert Checkpoint(tmp_path, SmallAgent()).restore() == second


def test_unreadable_index_file_and_no_readable_checkpoint(tmp_path):
    from dreamerv2_tf.run.checkpoint import CheckpointUnreadable
    _, (_, second) = saves(tmp_path, [5, 9])
    (tmp_path / 'checkpoint').write_bytes(b'\x00\xffnot a proto {{{')
    fresh = SmallAgent()
    assert Checkpoint(tmp_path, fresh).restore() == second  # found from the files
    assert int(fresh.step.numpy()) == 9
    for data in tmp_path.glob('ckpt-*.data*'):
        data.write_bytes(b'')
    with pytest.raises(CheckpointUnreadable, match='no readable checkpoint'):
        Checkpoint(tmp_path, SmallAgent()).restore()


def test_counters_missing_from_a_checkpoint_keep_their_values(tmp_path):
    saves(tmp_path, [4], {'updates': tf.Variable(7, dtype=tf.int64)})
    updates = tf.Variable(0, dtype=tf.int64)
    newer = tf.Variable('initial', dtype=tf.string)
    fresh = SmallAgent()
    Checkpoint(tmp_path, fresh, {'updates': updates, 'newer': newer}).restore()
    assert int(updates.numpy()) == 7 and newer.numpy() == b'initial'
    assert int(fresh.step.numpy()) == 4


def test_full_disk_during_a_save_removes_its_temporary_files(tmp_path, monkeypatch):
    from dreamerv2_tf.run.checkpoint import DiskFullError
    agent, _ = saves(tmp_path, [1])
    checkpoint = Checkpoint(tmp_path, agent)

    def full(self, *args, **kwargs):
        # What TensorFlow leaves when the disk fills while writing a checkpoint's data.
        (tmp_path / 'ckpt-2_temp').mkdir()
        (tmp_path / 'ckpt-2_temp' / 'part-00000-of-00001.data-00000-of-00001.tempstate1').write_bytes(b'x')
        raise tf.errors.ResourceExhaustedError(None, None, 'ckpt-2_temp/part; No space left on device')

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', full)
    with pytest.raises(DiskFullError, match='no space left on the device while writing a checkpoint'):
        checkpoint.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'checkpoint', 'ckpt-1.data-00000-of-00001', 'ckpt-1.index']
