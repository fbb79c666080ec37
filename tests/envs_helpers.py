"""Shared pieces of the environment tests: configs, small protocol envs (module-level so that
worker processes can unpickle them), rollouts and checks, and an independent area resize."""

import os
import pathlib

import numpy as np

from dreamerv2_tf.config import defaults
from dreamerv2_tf.envs.space import Space

TESTS_DIR = pathlib.Path(__file__).resolve().parent
PROTOCOL_FLAGS = ('reward', 'is_first', 'is_last', 'is_terminal')


def make_config(**overrides):
    return defaults().update(overrides)


def check_obs(obs, obs_space):
    """Every key of the space is present with exactly its dtype and shape (and nothing else)."""
    assert set(obs) == set(obs_space), (sorted(obs), sorted(obs_space))
    for key, space in obs_space.items():
        value = obs[key]
        assert isinstance(value, (np.ndarray, np.generic)), (key, type(value))
        assert value.dtype == space.dtype, (key, value.dtype, space.dtype)
        assert value.shape == space.shape, (key, value.shape, space.shape)
        if space.dtype != bool and space.low.size:
            assert np.all(value >= space.low) and np.all(value <= space.high), key


def check_protocol_spaces(env):
    spaces = env.obs_space
    assert spaces['reward'] == Space(np.float32)
    for key in ('is_first', 'is_last', 'is_terminal'):
        assert spaces[key] == Space(bool)
    assert set(env.act_space) == {'action'}


def random_actions(act_space, count, seed):
    rng = np.random.RandomState(seed)
    return [act_space['action'].sample(rng) for _ in range(count)]


def rollout(env, actions):
    """Reset then one step per action (stopping at the episode end); returns the observations."""
    observations = [env.reset()]
    for action in actions:
        observations.append(env.step({'action': action}))
        if observations[-1]['is_last']:
            break
    return observations


def same_observations(first, second):
    if len(first) != len(second):
        return False
    return all(set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
               for a, b in zip(first, second))


def area_weights(size_in, size_out):
    """Each output pixel averages the input interval it covers, weighting the partly covered
    input pixels at its borders by their covered fraction (area interpolation, from its
    definition rather than from OpenCV)."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        start, stop = i * scale, (i + 1) * scale
        for j in range(int(np.floor(start)), int(np.ceil(stop))):
            weights[i, j] = min(stop, j + 1) - max(start, j)
    return weights / scale


def area_resize(image, height, width):
    """Float result of area-resizing a 2D image."""
    return area_weights(image.shape[0], height) @ image.astype(np.float64) @ area_weights(
        image.shape[1], width).T


def process_alive(pid):
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'


# Small envs in the protocol ---------------------------------------------------------------------

class CounterEnv:
    """Observation `count` = steps since reset; `action` (one-hot over 3) is echoed in `last`.
    Raises in step when the action picks choice 2 twice in a row, to test error reporting."""

    obs_space = {
        'count': Space(np.int32, (), 0),
        'last': Space(np.float32, (3,), 0, 1),
        'pid': Space(np.int32, (), 0),
        'reward': Space(np.float32), 'is_first': Space(bool), 'is_last': Space(bool),
        'is_terminal': Space(bool),
    }
    act_space = {'action': Space(np.float32, (3,), 0, 1, discrete=True)}

    def __init__(self, fail_on_start=False):
        if fail_on_start:
            raise RuntimeError('CounterEnv was told to fail while starting')
        self._count = 0
        self._previous = None

    def _obs(self, last, first=False):
        return {'count': np.int32(self._count), 'last': np.asarray(last, np.float32),
                'pid': np.int32(os.getpid()), 'reward': np.float32(self._count),
                'is_first': np.bool_(first), 'is_last': np.bool_(False),
                'is_terminal': np.bool_(False)}

    def reset(self):
        self._count = 0
        self._previous = None
        return self._obs(np.zeros(3), first=True)

    def step(self, action):
        choice = int(np.argmax(action['action']))
        if choice == 2 and self._previous == 2:
            raise ValueError('CounterEnv got choice 2 twice in a row')
        self._previous = choice
        self._count += 1
        return self._obs(action['action'])

    def close(self):
        pass
