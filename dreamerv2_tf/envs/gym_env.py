"""`GymWrapper`: any Gymnasium environment (registered or user-made) in the observation protocol.

Observations: a Dict space gives one key per entry (nested dicts joined with '/'); a single
observation goes under `obs_key`, by default `image` for uint8 arrays of rank 2 or 3 (a channel
axis is added to rank 2) and `vector` otherwise. Float observations become float32, integer
ones int32, and Discrete observations one-hot float32 vectors. Actions: a Discrete space becomes
an integer `Space` (wrap with `OneHotAction`), a Box a float32 `Space` (wrap with
`NormalizeAction`), under `act_key` unless the action space is a Dict.

`is_terminal` is gymnasium's `terminated` (or `info['is_terminal']` when the env sets it) and
`is_last` is `terminated or truncated`: a time-limit truncation is not a terminal state (the
original treated every `done` as terminal; spec section 17 item 10). Envs with the old gym API
(`reset() -> obs`, `step() -> (obs, reward, done, info)`) also work; there, `done` is terminal
unless `info['TimeLimit.truncated']` says otherwise.
"""

import numpy as np

from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.envs.wrappers import Wrapper, base_obs_space, flags


class GymWrapper(Wrapper):
    """A gymnasium env in this package's protocol: observations and actions as dicts of spaces,
    `reward` and the `is_first` / `is_last` / `is_terminal` flags in the observation (time-limit
    truncation is not terminal)."""

    def __init__(self, env, obs_key=None, act_key='action', seed=None):
        self.env = env
        self._seed = seed
        self._seeded = False
        self._obs_converters = _converters(env.observation_space, obs_key)
        self._act_is_dict = _is_dict(env.action_space)
        self._act_key = act_key
        if self._act_is_dict:
            act_spaces = dict(env.action_space.spaces)
        else:
            act_spaces = {act_key: env.action_space}
        self._act_spaces = {key: _action_space(key, space) for key, space in act_spaces.items()}
        if seed is not None and hasattr(env.action_space, 'seed'):
            env.action_space.seed(int(seed))

    @property
    def obs_space(self):
        return {**{key: c.space for key, c in self._obs_converters.items()}, **base_obs_space()}

    @property
    def act_space(self):
        return {key: space for key, (space, _) in self._act_spaces.items()}

    def reset(self):
        if not self._seeded and self._seed is not None:
            # Seed once: later resets continue the env's random stream, so episodes differ.
            self._seeded = True
            result = self._reset(seed=int(self._seed))
        else:
            result = self._reset()
        return self._obs(result, flags(is_first=True))

    def _reset(self, seed=None):
        try:
            result = self.env.reset(seed=seed) if seed is not None else self.env.reset()
        except TypeError:  # old gym API without the seed argument
            if seed is not None and hasattr(self.env, 'seed'):
                self.env.seed(seed)
            result = self.env.reset()
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
            return result[0]
        return result

    def step(self, action):
        if self._act_is_dict:
            gym_action = {key: convert(action[key])
                          for key, (_, convert) in self._act_spaces.items()}
        else:
            gym_action = self._act_spaces[self._act_key][1](action[self._act_key])
        result = self.env.step(gym_action)
        if len(result) == 5:
            obs, reward, terminated, truncated, info = result
        else:
            obs, reward, done, info = result
            truncated = bool(info.get('TimeLimit.truncated', False))
            terminated = bool(done) and not truncated
        is_last = bool(terminated or truncated)
        if isinstance(info, dict) and 'is_terminal' in info:
            terminated = info['is_terminal']  # the env knows better, e.g. a wrapped time limit
        return self._obs(obs, flags(float(reward), is_last=is_last, is_terminal=bool(terminated)))

    def close(self):
        close = getattr(self.env, 'close', None)
        if close is not None:
            close()

    def _obs(self, raw, obs):
        for key, converter in self._obs_converters.items():
            obs[key] = converter(raw)
        return obs


class _Converter:
    """Reads one key out of a raw gym observation and casts it to `space`."""

    def __init__(self, path, space, transform):
        self.path, self.space, self._transform = path, space, transform

    def __call__(self, raw):
        for part in self.path:
            raw = raw[part]
        return self._transform(raw)


def _is_dict(space):
    from gymnasium import spaces
    return isinstance(space, spaces.Dict)


def _converters(space, obs_key, path=(), prefix=''):
    from gymnasium import spaces
    if isinstance(space, spaces.Dict):
        result = {}
        for key, sub in space.spaces.items():
            result.update(_converters(sub, None, path + (key,), f'{prefix}{key}/'))
        return result
    if path:
        key = prefix[:-1]
    elif obs_key is not None:
        key = obs_key
    else:
        is_image = (isinstance(space, spaces.Box) and space.dtype == np.uint8
                    and len(space.shape) in (2, 3))
        key = 'image' if is_image else 'vector'
    return {key: _converter(key, space, path)}


def _converter(key, space, path):
    from gymnasium import spaces
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def onehot(value):
            vector = np.zeros(n, np.float32)
            vector[int(value) - start] = 1
            return vector
        return _Converter(path, Space(np.float32, (n,), 0, 1), onehot)
    if isinstance(space, spaces.MultiBinary):
        shape = tuple(np.atleast_1d(space.n))
        return _Converter(path, Space(np.float32, shape, 0, 1),
                          lambda value: np.asarray(value, np.float32).reshape(shape))
    if isinstance(space, spaces.Box):
        dtype = np.dtype(space.dtype)
        shape = tuple(space.shape)
        low, high = space.low, space.high
        if dtype == np.uint8 and len(shape) == 2:
            shape = shape + (1,)  # grayscale images get a channel axis
            low, high = low[..., None], high[..., None]
        if dtype in (np.uint8, np.bool_):
            target = dtype
        elif np.issubdtype(dtype, np.floating):
            target = np.dtype(np.float32)
        elif np.issubdtype(dtype, np.integer):
            target = np.dtype(np.int32)
            low = np.clip(low, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
            high = np.clip(high, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        else:
            raise TypeError(f"observation '{key}' has unsupported dtype {dtype}")
        space_out = Space(target, shape, low, high) if target != bool else Space(bool, shape)
        return _Converter(path, space_out,
                          lambda value: np.asarray(value).astype(target).reshape(shape))
    raise TypeError(f"observation '{key}' has unsupported space {space}; use Box, Discrete, "
                    'MultiBinary or a Dict of them')


def _action_space(key, space):
    """(our Space, function from our action to the gym action)."""
    from gymnasium import spaces
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)
        return Space(np.int32, (), 0, n - 1), lambda a: int(a) + start
    if isinstance(space, spaces.Box):
        dtype = np.dtype(space.dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"action '{key}': integer Box action spaces are not supported")
        return (Space(np.float32, space.shape, space.low, space.high),
                lambda a: np.asarray(a, dtype).reshape(space.shape))
    raise TypeError(
        f"action '{key}' has unsupported space {space}; use Discrete, Box or a Dict of them")
