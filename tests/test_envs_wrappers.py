"""Wrappers and GymWrapper on small hand-made environments (no emulator, no physics)."""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from dreamerv2_tf.envs import (
    ActionRepeat, GymWrapper, NormalizeAction, OneHotAction, ResizeImage, Space, TimeLimit)
from dreamerv2_tf.envs.wrappers import base_obs_space, flags

from envs_helpers import area_resize, check_obs


class Recorder:
    """Protocol env that records the actions it receives and ends after `length` steps."""

    def __init__(self, act_space, length=1000, image_shape=(6, 8, 3)):
        self.act_space = {'action': act_space}
        self.obs_space = {'image': Space(np.uint8, image_shape, 0, 255), **base_obs_space()}
        self.actions = []
        self.length = length
        self.image = np.arange(np.prod(image_shape), dtype=np.uint8).reshape(image_shape)
        self.secret = 42

    def reset(self):
        self.steps = 0
        return {'image': self.image, **flags(is_first=True)}

    def step(self, action):
        self.actions.append(action['action'])
        self.steps += 1
        done = self.steps >= self.length
        return {'image': self.image, **flags(1.5, is_last=done, is_terminal=done)}

    def close(self):
        pass


def test_one_hot_action_exposes_one_hot_space_and_forwards_the_index():
    inner = Recorder(Space(np.int32, (), 0, 4))
    env = OneHotAction(inner)
    assert env.act_space['action'] == Space(np.float32, (5,), 0, 1, discrete=True)
    env.reset()
    env.step({'action': np.array([0, 0, 0, 1, 0], np.float32)})
    assert inner.actions == [3]
    for bad in ([0, 0.5, 0, 0.5, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0]):
        with pytest.raises(ValueError):
            env.step({'action': np.array(bad, np.float32)})


def test_normalize_action_maps_minus_one_to_one_onto_finite_bounds_only():
    inner = Recorder(Space(np.float32, (3,), [0, -4, -np.inf], [10, 4, np.inf]))
    env = NormalizeAction(inner)
    space = env.act_space['action']
    assert np.array_equal(space.low, [-1, -1, -np.inf])
    assert np.array_equal(space.high, [1, 1, np.inf])
    env.reset()
    env.step({'action': np.array([-1, 0.5, 7], np.float32)})
    env.step({'action': np.array([1, -1, -3], np.float32)})
    np.testing.assert_allclose(inner.actions[0], [0, 2, 7])
    np.testing.assert_allclose(inner.actions[1], [10, -4, -3])
    assert inner.actions[0].dtype == np.float32


def test_time_limit_cuts_without_terminal_and_refuses_steps_after_the_end():
    env = TimeLimit(Recorder(Space(np.int32, (), 0, 1)), 3)
    assert env.reset()['is_first']
    flags_seen = [(bool(o['is_last']), bool(o['is_terminal']))
                  for o in (env.step({'action': 0}) for _ in range(3))]
    assert flags_seen == [(False, False), (False, False), (True, False)]
    with pytest.raises(RuntimeError, match='reset'):
        env.step({'action': 0})
    env.reset()
    assert not env.step({'action': 0})['is_last']  # the count starts again


def test_time_limit_keeps_a_true_terminal_and_zero_means_no_limit():
    env = TimeLimit(Recorder(Space(np.int32, (), 0, 1), length=2), 0)
    env.reset()
    assert not env.step({'action': 0})['is_last']
    last = env.step({'action': 0})
    assert last['is_last'] and last['is_terminal']
    with pytest.raises(RuntimeError):
        env.step({'action': 0})


def test_action_repeat_sums_rewards_and_stops_at_the_end():
    inner = Recorder(Space(np.int32, (), 0, 1), length=5)
    env = ActionRepeat(inner, 3)
    env.reset()
    first = env.step({'action': 1})
    assert first['reward'] == np.float32(4.5) and first['reward'].dtype == np.float32
    second = env.step({'action': 1})
    assert second['is_last'] and second['reward'] == np.float32(3.0)  # 2 steps left, not 3
    assert len(inner.actions) == 5


def test_resize_image_area_matches_the_definition_and_keeps_channels():
    inner = Recorder(Space(np.int32, (), 0, 1), image_shape=(12, 16, 1))
    env = ResizeImage(inner, (4, 6))
    assert env.obs_space['image'] == Space(np.uint8, (4, 6, 1), 0, 255)
    image = env.reset()['image']
    assert image.shape == (4, 6, 1) and image.dtype == np.uint8
    expected = area_resize(inner.image[..., 0], 4, 6)
    assert np.abs(image[..., 0] - expected).max() <= 0.5 + 1e-6
    nearest = ResizeImage(Recorder(Space(np.int32, (), 0, 1), image_shape=(8, 8, 3)), (4, 4),
                          method='nearest')
    picked = nearest.reset()['image']
    assert set(np.unique(picked)) <= set(np.unique(nearest.env.image))  # no new values


def test_wrappers_forward_attributes_and_raise_attribute_error_for_missing_ones():
    env = TimeLimit(OneHotAction(Recorder(Space(np.int32, (), 0, 1))), 10)
    assert env.secret == 42
    assert not hasattr(env, 'no_such_attribute')
    assert getattr(env, 'no_such_attribute', 'default') == 'default'
    with pytest.raises(AttributeError):
        env.no_such_attribute


# GymWrapper -------------------------------------------------------------------------------------

class ImageGame(gymnasium.Env):
    """Gymnasium env with grayscale image observations (H x W, uint8) and discrete actions;
    terminates after `terminate_at` steps, truncates at `truncate_at`."""

    def __init__(self, terminate_at=5, truncate_at=100):
        self.observation_space = spaces.Box(0, 255, (10, 12), np.uint8)
        self.action_space = spaces.Discrete(3, start=1)
        self.terminate_at, self.truncate_at = terminate_at, truncate_at
        self.received = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self.np_random.integers(0, 256, (10, 12), dtype=np.uint8), {}

    def step(self, action):
        self.received.append(action)
        self.steps += 1
        obs = np.full((10, 12), self.steps, np.uint8)
        return obs, 2, self.steps >= self.terminate_at, self.steps >= self.truncate_at, {}


class VectorControl(gymnasium.Env):
    """Dict observations (a float64 vector, an int64 counter, a Discrete mode) and Box actions."""

    def __init__(self):
        self.observation_space = spaces.Dict({
            'position': spaces.Box(-1, 1, (2,), np.float64),
            'count': spaces.Box(0, 1000, (), np.int64),
            'mode': spaces.Discrete(4),
        })
        self.action_space = spaces.Box(np.array([-2, 0], np.float32), np.array([2, 1], np.float32))
        self.received = []

    def _obs(self):
        return {'position': np.array([0.25, -0.5]), 'count': np.int64(len(self.received)),
                'mode': 2}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        self.received.append(action)
        return self._obs(), 0.5, False, False, {'is_terminal': len(self.received) == 2}


def test_gym_wrapper_image_env_with_discrete_actions():
    game = ImageGame(terminate_at=3)
    env = OneHotAction(GymWrapper(game, seed=0))
    assert env.obs_space['image'] == Space(np.uint8, (10, 12, 1), 0, 255)
    assert env.act_space['action'] == Space(np.float32, (3,), 0, 1, discrete=True)
    first = env.reset()
    check_obs(first, env.obs_space)
    assert first['is_first'] and not first['is_last'] and first['reward'] == 0
    steps = [env.step({'action': np.eye(3, dtype=np.float32)[i]}) for i in (0, 2, 1)]
    for obs in steps:
        check_obs(obs, env.obs_space)
    assert game.received == [1, 3, 2]  # Discrete(3, start=1)
    assert [bool(o['is_terminal']) for o in steps] == [False, False, True]
    assert steps[1]['image'][0, 0, 0] == 2 and steps[1]['reward'] == 2


def test_gym_wrapper_truncation_is_last_but_not_terminal():
    env = GymWrapper(ImageGame(terminate_at=100, truncate_at=2))
    env.reset()
    assert not env.step({'action': 0})['is_last']
    last = env.step({'action': 0})
    assert last['is_last'] and not last['is_terminal']


def test_gym_wrapper_seed_repeats_the_first_episode_only():
    first = GymWrapper(ImageGame(), seed=7)
    second = GymWrapper(ImageGame(), seed=7)
    other = GymWrapper(ImageGame(), seed=8)
    a, b, c = first.reset(), second.reset(), other.reset()
    assert np.array_equal(a['image'], b['image']) and not np.array_equal(a['image'], c['image'])
    # Later resets continue the random stream instead of repeating the first episode.
    assert not np.array_equal(first.reset()['image'], a['image'])


def test_gym_wrapper_dict_observations_and_box_actions():
    game = VectorControl()
    env = NormalizeAction(GymWrapper(game))
    assert env.obs_space['position'] == Space(np.float32, (2,), -1, 1)
    assert env.obs_space['count'] == Space(np.int32, (), 0, 1000)
    assert env.obs_space['mode'] == Space(np.float32, (4,), 0, 1)
    obs = env.reset()
    check_obs(obs, env.obs_space)
    assert np.array_equal(obs['mode'], [0, 0, 1, 0])
    env.step({'action': np.array([1, -1], np.float32)})
    obs = env.step({'action': np.array([0, 1], np.float32)})
    check_obs(obs, env.obs_space)
    np.testing.assert_allclose(game.received, [[2, 0], [0, 1]])
    assert game.received[0].dtype == np.float32
    assert obs['is_terminal'] and not obs['is_last']  # info['is_terminal'] is honoured


def test_gym_wrapper_supports_the_old_gym_step_api():
    class OldApi:
        observation_space = spaces.Box(-1, 1, (3,), np.float32)
        action_space = spaces.Discrete(2)

        def reset(self):
            return np.zeros(3, np.float32)

        def step(self, action):
            return np.ones(3, np.float32), 1.0, True, {'TimeLimit.truncated': action == 1}

    env = GymWrapper(OldApi())
    assert env.reset()['vector'].dtype == np.float32
    cut = env.step({'action': 1})
    end = env.step({'action': 0})
    assert cut['is_last'] and not cut['is_terminal']
    assert end['is_last'] and end['is_terminal']


def test_gym_wrapper_rejects_unsupported_spaces():
    class TextEnv:
        observation_space = spaces.Text(5)
        action_space = spaces.Discrete(2)

    with pytest.raises(TypeError, match='unsupported space'):
        GymWrapper(TextEnv())
