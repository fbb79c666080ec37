"""Task names, make_env for gymnasium and crafter, seeding, the command line, import hygiene."""

import importlib.util
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from dreamerv2_tf.config import Config
from dreamerv2_tf.envs import (
    Space, Task, UnknownTaskError, make_batch_env, make_env, parse_task)
from dreamerv2_tf.envs.tasks import env_seed

from envs_helpers import (
    check_obs, check_protocol_spaces, make_config, random_actions, rollout, same_observations)


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'dreamerv2_tf.envs', *args], capture_output=True,
                          text=True, timeout=timeout)


# Task names ---------------------------------------------------------------------------------------

def test_parse_task_per_suite():
    assert parse_task('atari_pong') == Task('atari_pong', 'atari', 'pong')
    assert parse_task('crafter_noreward') == Task('crafter_noreward', 'crafter', 'noreward')
    assert parse_task('gym_CartPole-v1') == Task('gym_CartPole-v1', 'gym', 'CartPole-v1')
    assert parse_task('gym_ALE/Pong-v5').name == 'ALE/Pong-v5'  # ale-py registers its ids
    walker = parse_task('dmc_walker_walk')
    assert (walker.domain, walker.task, walker.source) == ('walker', 'walk', 'suite')


@pytest.mark.parametrize('name, closest', [
    ('pong', 'atari_pong'),
    ('atary_pong', 'atari_pong'),
    ('atari_pacman_ms', None),
    ('dmc_walker_wlak', 'dmc_walker_walk'),
    ('dmc_pointmass_easy', 'dmc_point_mass_easy'),
    ('crafter_rewards', 'crafter_reward'),
    ('gym_CartPole-v9', 'gym_CartPole-v1'),
    ('', None),
])
def test_unknown_task_names_give_one_line_with_suites_and_closest_names(name, closest):
    with pytest.raises(UnknownTaskError) as error:
        parse_task(name)
    message = str(error.value)
    assert isinstance(error.value, ValueError) and '\n' not in message
    assert 'suites: atari_<game>, dmc_<domain>_<task>, crafter_reward' in message
    if closest:
        assert closest in message.split('closest: ')[1].split(')')[0]


# Gymnasium classic control ------------------------------------------------------------------------

def gym_config(**overrides):
    return make_config(**{'task': 'gym_CartPole-v1', **overrides})


def test_cartpole_spaces_dtypes_shapes_and_first_flag():
    env = make_env(gym_config())
    check_protocol_spaces(env)
    assert env.obs_space['vector'] == Space(np.float32, (4,), env.obs_space['vector'].low,
                                            env.obs_space['vector'].high)
    assert env.act_space['action'] == Space(np.float32, (2,), 0, 1, discrete=True)
    assert 'image' not in env.obs_space
    observations = rollout(env, random_actions(env.act_space, 100, seed=0))
    for obs in observations:
        check_obs(obs, env.obs_space)
    assert observations[0]['is_first'] and not any(o['is_first'] for o in observations[1:])


def test_cartpole_falling_is_terminal_and_time_limits_are_not():
    env = make_env(gym_config())
    fallen = rollout(env, [np.array([1, 0], np.float32)] * 500)  # always push left: falls fast
    assert len(fallen) < 50 and fallen[-1]['is_last'] and fallen[-1]['is_terminal']
    assert not any(o['is_last'] for o in fallen[:-1])
    # Our TimeLimit (config.time_limit) ...
    cut = rollout(make_env(gym_config(time_limit=5)), [np.array([1, 0], np.float32),
                                                       np.array([0, 1], np.float32)] * 10)
    assert len(cut) == 6 and cut[-1]['is_last'] and not cut[-1]['is_terminal']
    # ... and gymnasium's own truncation (CartPole-v0 truncates at 200 steps).
    from dreamerv2_tf.envs import make_gym_env
    truncated = rollout(make_gym_env('CartPole-v1', max_episode_steps=4),
                        [np.array([1, 0], np.float32), np.array([0, 1], np.float32)] * 10)
    assert len(truncated) == 5 and truncated[-1]['is_last'] and not truncated[-1]['is_terminal']


def test_cartpole_same_seed_same_first_50_observations_other_seed_differs():
    def trajectory(seed, mode='train', index=0):
        env = make_env(gym_config(seed=seed, time_limit=50), mode, index)
        observations = [env.reset()]
        while not observations[-1]['is_last']:
            # Pushing towards where the pole falls keeps it up for the 50 steps.
            _, _, angle, angular_velocity = observations[-1]['vector']
            push = np.eye(2, dtype=np.float32)[int(angle + 0.5 * angular_velocity > 0)]
            observations.append(env.step({'action': push}))
        return observations

    first = trajectory(1)
    assert len(first) == 51
    assert same_observations(first, trajectory(1))
    assert not same_observations(first, trajectory(2))
    assert same_observations(trajectory(0, 'train', 1), first)  # env i is seeded seed + i
    assert not same_observations(trajectory(1, 'eval', 0), first)


def test_pixel_gym_env_is_resized_to_render_size():
    env = make_env(make_config(task='gym_ALE/Pong-v5', render_size=[32, 48], time_limit=3))
    assert env.obs_space['image'] == Space(np.uint8, (32, 48, 3), 0, 255)
    for obs in rollout(env, random_actions(env.act_space, 3, seed=0)):
        check_obs(obs, env.obs_space)


# Seeds and configs --------------------------------------------------------------------------------

def test_env_seeds_for_train_and_eval():
    config = make_config(seed=7)
    assert [env_seed(config, 'train', i) for i in range(3)] == [7, 8, 9]
    assert [env_seed(config, 'eval', i) for i in range(2)] == [10007, 10008]
    with pytest.raises(ValueError):
        env_seed(config, 'test', 0)


def test_config_pickles_and_plain_dicts_are_accepted():
    config = make_config(task='gym_CartPole-v1', seed=3, time_limit=4)
    assert pickle.loads(pickle.dumps(config)) == config
    from_dict = make_env({'task': 'gym_CartPole-v1', 'seed': 3, 'time_limit': 4})
    from_config = make_env(config)
    actions = [np.eye(2, dtype=np.float32)[i % 2] for i in range(10)]
    assert same_observations(rollout(from_dict, actions), rollout(from_config, actions))
    assert isinstance(config, Config)


def test_make_batch_env_uses_envs_and_seeds_each_env():
    with make_batch_env(gym_config(envs=3, envs_parallel='thread', seed=4)) as env:
        assert len(env) == 3
        first = env.step(None, np.ones(3, bool))['vector']
    assert len({row.tobytes() for row in first}) == 3
    single = make_env(gym_config(seed=6)).reset()['vector']
    assert np.array_equal(first[2], single)  # env 2 of seed 4 is seeded 6


# Crafter ------------------------------------------------------------------------------------------

def test_missing_crafter_gives_an_install_hint(monkeypatch):
    from dreamerv2_tf.envs.crafter_env import CrafterNotInstalledError
    installed = importlib.util.find_spec('crafter') is not None
    monkeypatch.setitem(sys.modules, 'crafter', None)  # makes `import crafter` fail
    with pytest.raises(CrafterNotInstalledError, match=r'pip install'):
        make_env(make_config(task='crafter_reward'))
    if not installed:  # also check the command line's message
        result = run_cli('crafter_reward')
        assert result.returncode == 2
        assert 'pip install' in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_crafter_protocol_and_stats_for_training_only(tmp_path):
    crafter = pytest.importorskip('crafter')
    config = make_config(task='crafter_noreward', logdir=str(tmp_path / 'train'), time_limit=30)
    env = make_env(config)
    check_protocol_spaces(env)
    assert env.obs_space['image'] == Space(np.uint8, (64, 64, 3), 0, 255)
    assert env.obs_space['log_reward'] == Space(np.float32)
    names = crafter.constants.achievements
    assert {f'log_achievement_{n}' for n in names} <= set(env.obs_space)
    observations = rollout(env, random_actions(env.act_space, 100, seed=0))
    for obs in observations:
        check_obs(obs, env.obs_space)
    assert len(observations) == 31 and observations[-1]['is_last']
    assert not observations[-1]['is_terminal']
    assert all(o['reward'] == 0 for o in observations)  # noreward trains without the reward
    assert (tmp_path / 'train' / 'crafter').is_dir()
    make_env(config.update(logdir=str(tmp_path / 'eval')), 'eval').reset()
    assert not (tmp_path / 'eval').exists()  # eval envs record nothing
    with pytest.raises(ValueError, match='action_repeat'):
        make_env(config.update(action_repeat=2))


def test_crafter_episode_end_writes_achievement_stats(tmp_path):
    pytest.importorskip('crafter')
    from dreamerv2_tf.envs.crafter_env import Crafter
    env = Crafter(outdir=tmp_path, seed=0, length=20)
    observations = [env.reset()] + [env.step({'action': 5}) for _ in range(20)]  # 5 = do
    assert observations[-1]['is_last'] and not observations[-1]['is_terminal']  # length cut
    stats = [json.loads(line) for line in (tmp_path / 'stats.jsonl').read_text().splitlines()]
    assert len(stats) == 1 and stats[0]['length'] == 20
    achievements = {key[len('log_achievement_'):]: int(value)
                    for key, value in observations[-1].items()
                    if key.startswith('log_achievement_')}
    assert {f'achievement_{k}': v for k, v in achievements.items()} == {
        k: v for k, v in stats[0].items() if k.startswith('achievement_')}


# Command line and imports -------------------------------------------------------------------------

def test_cli_help_and_a_short_run():
    help_text = run_cli('--help')
    assert help_text.returncode == 0
    for flag in ('--steps', '--envs', '--parallel', '--runs', 'atari_<game>'):
        assert flag in help_text.stdout
    result = run_cli('gym_CartPole-v1', '--steps', '50', '--runs', '3', '--envs', '2',
                     '--time_limit', '20')
    assert result.returncode == 0, result.stderr
    assert 'vector: Space(float32, shape=(4,)' in result.stdout
    assert 'action: Space(float32, shape=(2,), low=0.0, high=1.0, discrete)' in result.stdout
    assert result.stdout.count('agent steps/s') == 4 and 'median over 3 runs' in result.stdout
    bad = run_cli('atari_pongg')
    assert bad.returncode == 2 and 'atari_pong' in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_env_modules_do_not_import_tensorflow_or_load_mujoco():
    code = '''
import sys
import numpy as np
import dreamerv2_tf.envs
from dreamerv2_tf.envs import atari, batch, crafter_env, dmc, gym_env, tasks, worker, wrappers
from dreamerv2_tf.envs import __main__
from dreamerv2_tf.config import defaults
env = dreamerv2_tf.envs.make_env(defaults().update(task='atari_pong', action_repeat=4))
env.reset()
dreamerv2_tf.envs.parse_task('dmc_walker_walk')
print(sorted(m for m in ('tensorflow', 'dm_control', 'mujoco') if m in sys.modules))
'''
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '[]'
