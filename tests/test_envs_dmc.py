"""DeepMind Control from pixels, in a test process that has imported TensorFlow: MuJoCo renders in
an env worker process, never here (in one process with TF it segfaults; stack-notes 7)."""

import functools
import json
import os
import subprocess
import sys
import types

import dm_env
import numpy as np
import pytest
from dm_env import specs

from dreamerv2_tf.envs import BatchEnv, ProcessEnv, Space, UnknownTaskError, make_env, parse_task
from dreamerv2_tf.envs import dmc

from envs_helpers import (
    check_obs, check_protocol_spaces, make_config, random_actions, same_observations)


def dmc_config(**overrides):
    return make_config(**{'task': 'dmc_walker_walk', 'action_repeat': 2, 'dmc_fast_render': True,
                          **overrides})


@pytest.fixture(scope='module')
def walker():
    pytest.importorskip('tensorflow')  # loaded first, as in training
    dm_control_here = 'dm_control' in sys.modules
    env = make_env(dmc_config())
    assert isinstance(env, ProcessEnv)
    if not dm_control_here:
        assert 'dm_control' not in sys.modules  # MuJoCo was not loaded next to TensorFlow
    yield env
    env.close()


def test_walker_renders_next_to_tensorflow_with_the_protocol_spaces(walker):
    assert 'tensorflow' in sys.modules
    check_protocol_spaces(walker)
    assert walker.obs_space['image'] == Space(np.uint8, (64, 64, 3), 0, 255)
    # Proprioceptive vectors for dmc_proprio; the scalar height becomes a vector of one.
    assert walker.obs_space['orientations'] == Space(np.float32, (14,))
    assert walker.obs_space['height'] == Space(np.float32, (1,))
    assert walker.obs_space['velocity'] == Space(np.float32, (9,))
    assert walker.act_space['action'] == Space(np.float32, (6,), -1, 1)
    first = walker.reset()
    check_obs(first, walker.obs_space)
    image = first['image'].astype(float)
    assert image.std() > 10 and len(np.unique(first['image'].reshape(-1, 3), axis=0)) > 20
    assert first['is_first'] and not first['is_last'] and first['reward'] == 0


def test_walker_episode_ends_by_time_limit_after_500_agent_steps(walker):
    observations = [walker.reset()]
    for action in random_actions(walker.act_space, 600, seed=0):
        observations.append(walker.step({'action': action}))
        if observations[-1]['is_last']:
            break
    for obs in observations[::50] + observations[-1:]:
        check_obs(obs, walker.obs_space)
    assert len(observations) == 501  # 1000 physics steps with action repeat 2
    assert [bool(o['is_first']) for o in observations] == [True] + [False] * 500
    assert observations[-1]['is_last'] and not observations[-1]['is_terminal']
    assert not any(o['is_last'] or o['is_terminal'] for o in observations[:-1])
    rewards = np.array([o['reward'] for o in observations[1:]])
    assert rewards.dtype == np.float32 and np.all((rewards >= 0) & (rewards <= 2))  # 2 x [0, 1]


def test_same_seed_same_first_50_observations_other_seed_differs():
    pytest.importorskip('tensorflow')
    seeds = [3, 3, 4]
    constructors = [functools.partial(make_env, dmc_config(seed=seed)) for seed in seeds]
    with BatchEnv(constructors, 'process') as env:  # three workers start at once
        actions = random_actions(env.act_space, 50, seed=9)
        batches = [env.step(None, np.ones(3, bool))]
        for action in actions:
            batches.append(env.step({'action': np.stack([action] * 3)}, np.zeros(3, bool)))
    per_env = [[{k: v[i] for k, v in batch.items()} for batch in batches] for i in range(3)]
    for obs in per_env[0]:
        check_obs(obs, env.obs_space)
    assert same_observations(per_env[0], per_env[1])
    assert not same_observations(per_env[0], per_env[2])
    # The images differ too, not only the proprioceptive vectors.
    assert any(not np.array_equal(a['image'], b['image']) for a, b in zip(per_env[0], per_env[2]))


def test_multi_word_domain_loads_and_renders():
    pytest.importorskip('tensorflow')
    env = make_env(dmc_config(task='dmc_point_mass_easy'))
    try:
        assert set(env.obs_space) == {'image', 'position', 'velocity', 'reward', 'is_first',
                                      'is_last', 'is_terminal'}
        assert env.act_space['action'] == Space(np.float32, (2,), -1, 1)
        for obs in [env.reset(), env.step({'action': np.array([1, -1], np.float32)})]:
            check_obs(obs, env.obs_space)
            assert obs['image'].std() > 5
    finally:
        env.close()


def test_catalogue_read_from_source_equals_dm_control_suite():
    """The task list comes from dm_control's source files (importing dm_control here, next to
    TensorFlow, would crash); compare it with the real registry in a clean process."""
    code = ('import json; from dm_control import suite; '
            'print(json.dumps(sorted(f"{d}_{t}" for d, t in suite.ALL_TASKS)))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env={**os.environ, 'MUJOCO_GL': 'disable'}, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout.strip().splitlines()[-1])
    ours = sorted(f'{domain}_{task}' for domain, tasks in dmc.catalog()['suite'].items()
                  for task in tasks)
    assert ours == expected
    assert 'reach_site' in dmc.catalog()['manip']['manip']


@pytest.mark.parametrize('name, domain, task', [
    ('dmc_point_mass_easy', 'point_mass', 'easy'),
    ('dmc_ball_in_cup_catch', 'ball_in_cup', 'catch'),
    ('dmc_cup_catch', 'ball_in_cup', 'catch'),
    ('dmc_cartpole_swingup_sparse', 'cartpole', 'swingup_sparse'),
    ('dmc_humanoid_CMU_run', 'humanoid_CMU', 'run'),
    ('dmc_manip_reach_site', 'manip', 'reach_site'),
    ('dmc_locom_rodent_two_touch', 'locom', 'rodent_two_touch'),
])
def test_task_names_with_multi_word_domains_and_tasks(name, domain, task):
    parsed = parse_task(name)
    assert (parsed.suite, parsed.domain, parsed.task) == ('dmc', domain, task)


def test_unknown_dmc_task_is_a_one_line_error_with_the_closest_names():
    with pytest.raises(UnknownTaskError) as error:
        parse_task('dmc_point_mass_hardd')
    message = str(error.value)
    assert '\n' not in message and 'dmc_point_mass_hard' in message and 'atari_<game>' in message


# The DMC class on a scripted dm_env environment (no MuJoCo): flags, repeat, conversions.

class ScriptedPhysics:
    def __init__(self):
        self.model = types.SimpleNamespace(vis=types.SimpleNamespace(
            quality=types.SimpleNamespace(shadowsize=2048, offsamples=4)))
        self.cameras = []

    def render(self, height, width, camera_id):
        self.cameras.append(camera_id)
        return np.full((height, width, 3), 7, np.uint8)


class ScriptedEnv(dm_env.Environment):
    """Rewards 1, 2, 3, ...; ends at step `end` with `discount` (0 = terminal, 1 = time limit)."""

    def __init__(self, end=5, discount=0.0):
        self.physics = ScriptedPhysics()
        self.end, self.discount = end, discount
        self.actions = []

    def observation_spec(self):
        return {'speed': specs.Array((), np.float64), 'joints': specs.Array((3,), np.float64),
                'empty': specs.Array((0,), np.float64), 'counter': specs.Array((2,), np.int64)}

    def action_spec(self):
        return specs.BoundedArray((2,), np.float64, [-2, 0], [2, 1])

    def _observation(self):
        t = len(self.actions)
        return {'speed': np.float64(t), 'joints': np.full(3, t, np.float64),
                'empty': np.zeros(0), 'counter': np.array([t, -t])}

    def reset(self):
        self.actions = []
        return dm_env.restart(self._observation())

    def step(self, action):
        self.actions.append(np.array(action))
        t = len(self.actions)
        if t == 1:
            return dm_env.transition(None, self._observation())  # some tasks start without reward
        if t >= self.end:
            return dm_env.TimeStep(dm_env.StepType.LAST, float(t), self.discount,
                                   self._observation())
        return dm_env.transition(float(t), self._observation())


def test_dmc_terminal_flags_repeat_and_observation_conversion():
    scripted = ScriptedEnv(end=5, discount=0.0)
    env = dmc.DMC('walker_walk', action_repeat=2, size=(8, 10), env=scripted)
    assert set(env.obs_space) == {'image', 'speed', 'joints', 'counter', 'reward', 'is_first',
                                  'is_last', 'is_terminal'}
    assert env.obs_space['speed'] == Space(np.float32, (1,))
    assert env.obs_space['counter'] == Space(np.int32, (2,))
    assert env.act_space['action'] == Space(np.float32, (2,), [-2, 0], [2, 1])
    first = env.reset()
    check_obs(first, env.obs_space)
    steps = [env.step({'action': np.array([0.5, 0.5], np.float32)}) for _ in range(3)]
    for obs in steps:
        check_obs(obs, env.obs_space)
    assert [float(o['reward']) for o in steps] == [0 + 2, 3 + 4, 5]  # the last repeat stops early
    assert [(bool(o['is_last']), bool(o['is_terminal'])) for o in steps] == [
        (False, False), (False, False), (True, True)]
    assert len(scripted.actions) == 5 and np.array_equal(steps[1]['counter'], [4, -4])
    with pytest.raises(ValueError, match='non-finite'):
        env.step({'action': np.array([np.nan, 0], np.float32)})


def test_dmc_time_limit_end_is_not_terminal_and_quadruped_uses_camera_2():
    scripted = ScriptedEnv(end=2, discount=1.0)
    env = dmc.DMC('quadruped_run', action_repeat=1, size=(4, 4), env=scripted, fast_render=True)
    env.reset()
    env.step({'action': np.zeros(2, np.float32)})
    last = env.step({'action': np.zeros(2, np.float32)})
    assert last['is_last'] and not last['is_terminal']
    assert set(scripted.physics.cameras) == {2}
    quality = scripted.physics.model.vis.quality
    assert (quality.shadowsize, quality.offsamples) == (0, 0)
    other = dmc.DMC('walker_walk', size=(4, 4), env=ScriptedEnv())
    other.reset()
    assert other._env.physics.cameras == [0]
    assert other._env.physics.model.vis.quality.shadowsize == 2048  # the paper's visuals by default


@pytest.mark.parametrize('blocks, train_image, eval_image', [
    (['defaults', 'dmc_vision'], True, True),
    (['defaults', 'dmc_proprio'], False, True),  # eval still renders for the policy video
])
def test_dmc_renders_only_what_a_network_reads_or_a_video_shows(blocks, train_image, eval_image):
    from dreamerv2_tf.config import compose
    from dreamerv2_tf.envs.tasks import needs_image
    config = compose(blocks).update(task='dmc_walker_walk')
    assert needs_image(config, 'train') is train_image
    assert needs_image(config, 'eval') is eval_image
    assert needs_image(config.update(log_keys_video=['none']), 'eval') is train_image
    # The env itself: no image key and no render call when none is needed.
    scripted = ScriptedEnv(end=5, discount=0.0)
    env = dmc.DMC('walker_walk', action_repeat=2, size=(8, 10), env=scripted, render=False)
    assert 'image' not in env.obs_space
    obs = [env.reset(), env.step({'action': np.array([0.5, 0.5], np.float32)})]
    for step in obs:
        check_obs(step, env.obs_space)
    assert scripted.physics.cameras == []
