"""Atari: the protocol, the paper's preprocessing checked against raw ALE screens, seeding, and
the 55 games of the paper."""

import json
import pathlib

import numpy as np
import pytest

from dreamerv2_tf.envs import PAPER_ATARI_GAMES, Space, UnknownTaskError, make_env, parse_task

from envs_helpers import (
    area_resize, check_obs, check_protocol_spaces, make_config, random_actions, rollout,
    same_observations)

# shared/ sits next to the repository, in CI too.
SCORES = (pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'scores'
          / 'atari-dreamerv2.json')


def atari_config(**overrides):
    return make_config(**{'task': 'atari_pong', 'action_repeat': 4, 'time_limit': 27000,
                          **overrides})


def test_pong_spaces_dtypes_and_shapes():
    env = make_env(atari_config())
    check_protocol_spaces(env)
    assert env.obs_space['image'] == Space(np.uint8, (64, 64, 1), 0, 255)
    assert env.obs_space['ram'] == Space(np.uint8, (128,), 0, 255)
    assert env.act_space['action'] == Space(np.float32, (6,), 0, 1, discrete=True)  # minimal set
    observations = rollout(env, random_actions(env.act_space, 30, seed=0))
    for obs in observations:
        check_obs(obs, env.obs_space)
    assert [bool(o['is_first']) for o in observations] == [True] + [False] * 30
    assert 1 <= env.noops_done <= 30
    env.close()


def test_color_frames_and_other_sizes():
    env = make_env(atari_config(atari_grayscale=False, render_size=[84, 96]))
    assert env.obs_space['image'] == Space(np.uint8, (84, 96, 3), 0, 255)
    check_obs(env.reset(), env.obs_space)


def test_time_limit_cut_is_last_without_terminal():
    env = make_env(atari_config(time_limit=10))
    observations = rollout(env, random_actions(env.act_space, 50, seed=1))
    assert len(observations) == 11
    assert [bool(o['is_last']) for o in observations] == [False] * 10 + [True]
    assert not any(o['is_terminal'] for o in observations)
    with pytest.raises(RuntimeError):
        env.step({'action': np.eye(6, dtype=np.float32)[0]})


@pytest.mark.parametrize('game', ['pong', 'breakout'])
def test_game_over_is_terminal_and_life_loss_is_not(game):
    # A random policy loses Pong (21 points) and all 5 Breakout lives within about 1000 steps.
    env = make_env(atari_config(task=f'atari_{game}', time_limit=0))
    ale = env.env.env._ale
    observations = [env.reset()]
    lives = [ale.lives()]
    for action in random_actions(env.act_space, 5000, seed=2):
        observations.append(env.step({'action': action}))
        lives.append(ale.lives())
        if observations[-1]['is_last']:
            break
    assert observations[-1]['is_last'] and observations[-1]['is_terminal']
    assert not any(o['is_last'] or o['is_terminal'] for o in observations[:-1])
    assert len(observations) > 100
    if game == 'breakout':
        assert max(lives) == 5 and lives[-1] == 0  # losing lives did not end the episode


def test_same_seed_same_first_50_observations_other_seed_differs():
    def trajectory(seed):
        env = make_env(atari_config(seed=seed))
        return rollout(env, random_actions(env.act_space, 50, seed=123))

    first, again, other = trajectory(5), trajectory(5), trajectory(6)
    assert len(first) == 51
    assert same_observations(first, again)
    assert not same_observations(first, other)


def test_preprocessing_matches_an_independent_computation_from_raw_ale_screens():
    """Replays the env's emulator in a second ALEInterface with the same seed and settings, and
    computes each observation from its raw grayscale screens: max over the last two frames of
    the action repeat, then area interpolation to 64x64 (from its definition)."""
    import ale_py
    from ale_py import roms

    seed = 11
    env = make_env(atari_config(seed=seed))
    reference = ale_py.ALEInterface()
    reference.setInt('random_seed', seed)
    reference.setFloat('repeat_action_probability', 0.25)
    reference.loadROM(str(roms.get_rom_path('pong')))
    actions = reference.getMinimalActionSet()

    def screen():
        return reference.getScreenGrayscale().copy()

    obs = env.reset()
    reference.reset_game()
    frames = [screen()]
    for _ in range(env.noops_done):
        reference.act(actions[0])
        frames.append(screen())
    expected = area_resize(np.maximum(frames[-2], frames[-1]), 64, 64)
    assert np.abs(obs['image'][..., 0] - expected).max() <= 0.5 + 1e-6

    pooling_mattered = False
    for index in np.random.RandomState(0).randint(len(actions), size=40):
        obs = env.step({'action': np.eye(len(actions), dtype=np.float32)[index]})
        reward, frames = 0, []
        for _ in range(4):
            reward += reference.act(actions[index])
            frames.append(screen())
        expected = area_resize(np.maximum(frames[-2], frames[-1]), 64, 64)
        assert np.abs(obs['image'][..., 0] - expected).max() <= 0.5 + 1e-6
        assert obs['reward'] == reward
        assert np.array_equal(obs['ram'], reference.getRAM())
        last_only = np.round(area_resize(frames[-1], 64, 64))
        pooling_mattered |= not np.array_equal(obs['image'][..., 0], last_only)
    assert pooling_mattered  # the check above would notice a missing max-pool


def test_every_paper_game_resolves_to_a_bundled_rom():
    from ale_py import roms

    if SCORES.exists():  # the list in the package is the one of the paper's score file
        tasks = {record['task'] for record in json.loads(SCORES.read_text())}
        assert tasks == {f'atari_{game}' for game in PAPER_ATARI_GAMES}
    assert len(PAPER_ATARI_GAMES) == 55
    for game in PAPER_ATARI_GAMES:
        task = parse_task(f'atari_{game}')
        path = roms.get_rom_path(task.name)  # checks the ROM's md5 too
        assert path is not None and path.is_file(), game
    assert parse_task('atari_james_bond').name == 'jamesbond'


@pytest.mark.parametrize('game', ['james_bond', 'montezuma_revenge', 'video_pinball'])
def test_some_renamed_or_long_named_games_load_and_step(game):
    env = make_env(atari_config(task=f'atari_{game}', time_limit=5))
    observations = rollout(env, random_actions(env.act_space, 5, seed=0))
    for obs in observations:
        check_obs(obs, env.obs_space)


def test_unknown_game_is_a_one_line_error_with_the_closest_names():
    with pytest.raises(UnknownTaskError) as error:
        make_env(atari_config(task='atari_pongg'))
    message = str(error.value)
    assert '\n' not in message and 'atari_pong' in message and 'dmc_<domain>_<task>' in message
    assert isinstance(error.value, ValueError)
