"""The training loop (`run.loop.Trainer`) in-process with a counting stub agent on gym CartPole:
resume after a stop request, schedules and the command's logdir rules (default per seed, a
logdir of another task or seed refused)."""

import json
import logging
import re
import signal

import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import envs
from dreamerv2_tf.run import checkpoint as checkpointlib
from dreamerv2_tf.run import logger as loglib
from dreamerv2_tf.run.loop import StopRequested, Trainer, episode_scalars
from dreamerv2_tf.run.replay import Replay

from conftest import make_config


class CountingAgent:
    """The agent interface the loop uses, without networks: random actions, and a train call
    that only counts (in a checkpointed variable, so the count survives a resume)."""

    def __init__(self, obs_space, act_space, seed=0):
        self.act_space = act_space
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name='train_calls')
        self.rng = tf.random.Generator.from_seed(seed)
        self.networks, self.optimizers = [], []
        self.state_variables = [self.step, self.calls]
        self.train_steps = []  # the step of every train call made by this instance
        self._actions = np.random.RandomState(seed)

    def initial_policy_state(self, batch_size):
        return 'policy state'

    def initial_train_state(self, batch_size):
        return 'train state'

    def policy(self, obs, state, mode):
        assert state == 'policy state' and mode in ('explore', 'train', 'eval')
        size = self.act_space['action'].shape[0]
        index = self._actions.randint(0, size, len(obs['is_first']))
        return {'action': np.eye(size, dtype=np.float32)[index]}, state

    def train(self, data, state):
        assert state == 'train state' and data['reward'].shape == (2, 4)
        self.calls.assign_add(1)
        self.train_steps.append(int(self.step.numpy()))
        return state, {'loss': 1.0}

    def report(self, data):
        return {}


def loop_config(**overrides):
    flags = ['--task', 'gym_CartPole-v1', '--steps', '300', '--prefill', '50', '--pretrain', '3',
             '--train_every', '7', '--train_steps', '2', '--eval_every', '100',
             '--log_every', '40', '--eval_eps', '1', '--save_every', '0', '--export_every', '0',
             '--replay.minlen', '4', '--replay.maxlen', '4', '--dataset.length', '4',
             '--dataset.batch', '2', '--deterministic', 'True']
    return make_config(flags=flags, **overrides)


class CarryingAgent(CountingAgent):
    """Its train state, carried from one train call to the next, counts the calls made (per
    batch row); it records the state each call was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.given = []

    def initial_train_state(self, batch_size):
        return {'calls': tf.zeros([batch_size, 1])}

    def train(self, data, state):
        self.given.append(state['calls'].numpy()[:, 0].tolist())
        self.calls.assign_add(1)
        self.train_steps.append(int(self.step.numpy()))
        return {'calls': state['calls'] + 1}, {'loss': 1.0}


def run_loop(config, logdir, stop_at=None, agent_class=CountingAgent):
    """One process's worth of training on `logdir`; returns (agent, summary or the
    StopRequested raised once the step reaches `stop_at`)."""
    agents, trainers = [], []

    def make_agent(obs_space, act_space):
        agents.append(agent_class(obs_space, act_space, config.seed))
        return agents[-1]

    def make_replay(directory, mode):
        return Replay(directory, 10000, 4, 4, seed=config.seed + (mode == 'eval'))

    def make_logger(directory):
        return loglib.Logger([loglib.JSONLOutput(directory)], multiplier=config.action_repeat)

    def check_stop():
        if stop_at is not None and trainers[0].step >= stop_at:
            raise StopRequested(signal.SIGTERM)

    train_envs = envs.BatchEnv([lambda: envs.make_gym_env('CartPole-v1', seed=0)], 'none')
    eval_envs = envs.BatchEnv([lambda: envs.make_gym_env('CartPole-v1', seed=1)], 'none')
    try:
        trainers.append(Trainer(config, logdir, train_envs, eval_envs, make_agent, make_replay,
                                make_logger, check_stop))
        try:
            result = trainers[0].run()
        except StopRequested as stop:
            result = stop
    finally:
        train_envs.close()
        eval_envs.close()
    assert len(agents) == 1
    return agents[0], result


@pytest.fixture
def restores(monkeypatch):
    """Paths of the checkpoints actually loaded."""
    loaded = []
    original = checkpointlib.Checkpoint.restore

    def restore(self, path=None):
        result = original(self, path)
        if result is not None:
            loaded.append(result)
        return result

    monkeypatch.setattr(checkpointlib.Checkpoint, 'restore', restore)
    return loaded


def test_resume_after_a_stop_continues_without_extra_updates(tmp_path, restores, caplog):
    caplog.set_level(logging.INFO, logger='dreamerv2_tf.run.loop')
    config = loop_config()
    whole, summary = run_loop(config, tmp_path / 'whole')
    assert summary['step'] == 300 and int(whole.step.numpy()) == 300
    expected = int(whole.calls.numpy())
    assert expected == len(whole.train_steps) == summary['updates'] > 3 + 2 * 30
    assert restores == []

    # Stopped mid-phase at a step no schedule aligns with, then resumed on the same logdir.
    logdir, stop_at = tmp_path / 'resumed', 173
    caplog.clear()
    first, stop = run_loop(config, logdir, stop_at)
    assert isinstance(stop, StopRequested) and stop.signum == signal.SIGTERM
    assert int(first.step.numpy()) == stop_at
    assert re.search(rf'Saved checkpoint \S+ \(on SIGTERM, step {stop_at}\)', caplog.text)
    assert 'Training finished' not in caplog.text

    saved = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    caplog.clear()
    second, summary = run_loop(config, logdir)
    assert restores == [saved]  # loaded once, the one written on stop
    assert caplog.text.count('Resumed from') == 1
    assert f'at step {stop_at} ({len(first.train_steps)} updates)' in caplog.text
    assert 'Prefill' not in caplog.text  # nothing redone
    assert summary['step'] == 300 and 'Training finished at step 300.' in caplog.text
    # No pretrain again and no extra update: the two processes made exactly the updates of the
    # uninterrupted run, the second only after the step it resumed at.
    assert second.train_steps and min(second.train_steps) > stop_at
    assert len(first.train_steps) + len(second.train_steps) == expected
    assert int(second.calls.numpy()) == summary['updates'] == expected
    # The uninterrupted run's update steps, except that one due at the stop step itself comes
    # one step later.
    moved = [step + (step == stop_at) for step in whole.train_steps]
    assert first.train_steps + second.train_steps == moved
    # What is logged continues from the checkpointed step.
    lines = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
    assert lines[-1]['step'] == 300 and max(line['step'] for line in lines) == 300
    assert any(line['step'] == stop_at for line in lines)  # the write on stop
    assert int(tf.train.load_variable(tf.train.latest_checkpoint(str(logdir / 'checkpoints')),
                                      'state/step/.ATTRIBUTES/VARIABLE_VALUE')) == 300


def test_the_train_state_carried_between_batches_is_restored_on_resume(tmp_path):
    config = loop_config(steps=120)
    first, stop = run_loop(config, tmp_path, 90, CarryingAgent)
    assert isinstance(stop, StopRequested)
    second, summary = run_loop(config, tmp_path, agent_class=CarryingAgent)
    assert first.given and second.given and summary['step'] == 120
    # Without a resume the state entering call k is k (for both batch rows): it continues
    # across the stop instead of restarting from zeros.
    given = first.given + second.given
    assert given == [[float(k)] * 2 for k in range(len(given))]


def test_resumes_a_checkpoint_without_the_train_schedule(tmp_path, restores):
    """Checkpoints written before the loop saved its train schedule still resume."""
    config = loop_config(steps=120)
    space = envs.make_gym_env('CartPole-v1')
    old = CountingAgent(space.obs_space, space.act_space)
    old.step.assign(100)
    updates = tf.Variable(9, dtype=tf.int64, trainable=False, name='updates')
    checkpointlib.Checkpoint(tmp_path / 'checkpoints', old, {'updates': updates}).save()
    Replay(tmp_path / 'train_episodes', 10, 4, 4).add_episode(
        {key: np.zeros((6,) + s.shape, s.dtype) for key, s in
         {**space.obs_space, **space.act_space}.items()})
    agent, summary = run_loop(config, tmp_path)
    assert restores and agent.train_steps and min(agent.train_steps) == 101
    assert summary['step'] == 120 and summary['updates'] == 9 + len(agent.train_steps)


def test_every():
    from dreamerv2_tf.run.loop import Every
    every = Every(5)
    assert [step for step in range(3, 20) if every(step)] == [3, 8, 13, 18]
    assert not any(Every(0)(step) for step in range(5))


def test_episode_scalars_by_hand():
    config = make_config('crafter')  # sums log_reward, maxes log_achievement_*
    episode = {'log_reward': np.array([0.0, 1.0, -0.5], np.float32),
               'log_achievement_eat': np.array([[0], [2], [1]], np.int32),
               'image': np.zeros((3, 64, 64, 3), np.uint8), 'reward': np.ones(3, np.float32)}
    assert episode_scalars(episode, 'eval', config) == {
        'sum_eval_log_reward': 0.5, 'max_eval_log_achievement_eat': 2.0}
    assert episode_scalars(episode, 'train', make_config()) == {}  # defaults log nothing


# The command's logdir rules ---------------------------------------------------------------------

def test_default_logdir_names_task_and_seed():
    from dreamerv2_tf.train import resolve_logdir
    logdirs = {resolve_logdir(make_config(task='atari_pong', seed=seed)).logdir
               for seed in (0, 1)}
    assert logdirs == {'runs/atari_pong/seed0', 'runs/atari_pong/seed1'}
    assert resolve_logdir(make_config(logdir='mine', seed=1)).logdir == 'mine'


@pytest.mark.parametrize('flags, message', [
    (['--seed', '1'], 'holds a run with seed 0, not seed 1'),
    (['--task', 'atari_breakout'], 'holds a run with task atari_pong, not task atari_breakout'),
])
def test_resuming_another_tasks_or_seeds_logdir_exits_2(tmp_path, capsys, flags, message):
    from dreamerv2_tf import train
    logdir = tmp_path / 'run'
    logdir.mkdir()
    make_config(task='atari_pong', seed=0, logdir=str(logdir)).save(logdir / 'config.yaml')
    before = (logdir / 'config.yaml').read_text()
    code = train.main(['--configs', 'defaults', 'atari', 'tiny', '--task', 'atari_pong',
                       '--logdir', str(logdir), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ''
    assert err.startswith(f'error: logdir {logdir} {message}') and len(err.splitlines()) == 1
    assert (logdir / 'config.yaml').read_text() == before  # nothing written
    assert sorted(p.name for p in logdir.iterdir()) == ['config.yaml']
