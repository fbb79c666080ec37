"""Wrappers that speak the observation protocol of spec section 3.

Every environment here has `obs_space` and `act_space` (dicts of `Space`), `reset() -> obs`,
`step({'action': a}) -> obs` and `close()`. An observation dict always holds `reward` (float32),
`is_first`, `is_last` and `is_terminal` (bool); `is_last` without `is_terminal` is a cut episode
(time limit) whose last state still has a value, `is_terminal` is a true end (discount 0).
"""

import numpy as np

from dreamerv2_tf.envs.space import Space


def base_obs_space():
    """The keys every observation dict carries."""
    return {
        'reward': Space(np.float32),
        'is_first': Space(bool),
        'is_last': Space(bool),
        'is_terminal': Space(bool),
    }


def flags(reward=0.0, is_first=False, is_last=False, is_terminal=False):
    """The protocol's common keys with their exact NumPy dtypes."""
    return {
        'reward': np.float32(reward),
        'is_first': np.bool_(is_first),
        'is_last': np.bool_(is_last),
        'is_terminal': np.bool_(is_terminal),
    }


class Wrapper:
    """Forwards everything it does not override to the wrapped env.

    A missing attribute raises AttributeError (the original raised ValueError, which broke
    `hasattr` and `getattr(env, name, default)`; spec section 17 item 21)."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        # `env` itself missing means __init__ has not run (e.g. during unpickling): no recursion.
        if name.startswith('__') or name == 'env':
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def obs_space(self):
        return self.env.obs_space

    @property
    def act_space(self):
        return self.env.act_space

    def reset(self):
        return self.env.reset()

    def step(self, action):
        return self.env.step(action)

    def close(self):
        return self.env.close()


class OneHotAction(Wrapper):
    """Exposes an integer action (`Space(int, (), 0, n - 1)`) as a one-hot float32 vector."""

    def __init__(self, env, key='action'):
        super().__init__(env)
        space = env.act_space[key]
        if space.discrete:
            raise ValueError(f"action '{key}' is already one-hot")
        if space.shape != () or not np.issubdtype(space.dtype, np.integer) or space.low != 0:
            raise ValueError(
                f'OneHotAction needs an integer action space from 0 to n-1, got {space}')
        self._key = key
        self._n = int(space.high) + 1

    @property
    def act_space(self):
        return {**self.env.act_space, self._key: Space(np.float32, (self._n,), 0, 1, discrete=True)}

    def step(self, action):
        onehot = np.asarray(action[self._key])
        if onehot.shape != (self._n,):
            raise ValueError(f'one-hot action needs shape ({self._n},), got {onehot.shape}')
        index = int(np.argmax(onehot))
        # Exactly one entry, and it is 1 (a cheaper test than allclose, which costs more than
        # emulating a frame).
        if onehot[index] != 1 or np.count_nonzero(onehot) != 1:
            raise ValueError(f'invalid one-hot action {onehot.tolist()}')
        return self.env.step({**action, self._key: index})


class NormalizeAction(Wrapper):
    """Exposes every bounded action dimension as [-1, 1]; unbounded dimensions pass through."""

    def __init__(self, env, key='action'):
        super().__init__(env)
        space = env.act_space[key]
        if space.discrete or not np.issubdtype(space.dtype, np.floating):
            raise ValueError(f'NormalizeAction needs a continuous action space, got {space}')
        self._key = key
        self._space = space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        self._mask = np.isfinite(low) & np.isfinite(high)
        self._low = np.where(self._mask, low, -1.0)
        self._high = np.where(self._mask, high, 1.0)

    @property
    def act_space(self):
        low = np.where(self._mask, -1.0, self._space.low)
        high = np.where(self._mask, 1.0, self._space.high)
        return {**self.env.act_space, self._key: Space(np.float32, self._space.shape, low, high)}

    def step(self, action):
        normalized = np.asarray(action[self._key], np.float64)
        original = (normalized + 1) / 2 * (self._high - self._low) + self._low
        original = np.where(self._mask, original, normalized).astype(self._space.dtype)
        return self.env.step({**action, self._key: original})


class ResizeImage(Wrapper):
    """Resizes image observations (uint8, H x W x C) to `size` = (height, width).

    `method` 'area' averages the covered pixels (as Atari's preprocessing does: no aliasing when
    shrinking), 'nearest' picks pixels (what the original used). `keys` defaults to every image key
    whose size differs from `size`."""

    def __init__(self, env, size=(64, 64), keys=None, method='area'):
        super().__init__(env)
        import cv2  # only envs that resize need OpenCV
        self._size = tuple(int(x) for x in size)
        interpolations = {'area': cv2.INTER_AREA, 'nearest': cv2.INTER_NEAREST,
                          'linear': cv2.INTER_LINEAR}
        if method not in interpolations:
            raise ValueError(
                f"resize method must be one of {', '.join(interpolations)}, got {method!r}")
        self._interpolation = interpolations[method]
        if keys is None:
            keys = [k for k, s in env.obs_space.items()
                    if len(s.shape) == 3 and s.dtype == np.uint8 and s.shape[:2] != self._size]
        self._keys = tuple(keys)

    @property
    def obs_space(self):
        spaces = dict(self.env.obs_space)
        for key in self._keys:
            space = spaces[key]
            spaces[key] = Space(space.dtype, self._size + space.shape[2:], 0, 255)
        return spaces

    def _resize(self, obs):
        import cv2
        obs = dict(obs)
        for key in self._keys:
            image = obs[key]
            resized = cv2.resize(image, self._size[::-1], interpolation=self._interpolation)
            obs[key] = resized.reshape(self._size + image.shape[2:])  # cv2 drops a channel of 1
        return obs

    def reset(self):
        return self._resize(self.env.reset())

    def step(self, action):
        return self._resize(self.env.step(action))


class TimeLimit(Wrapper):
    """Ends episodes after `duration` steps (0 = never) with `is_last` but not `is_terminal`, so the
    agent keeps bootstrapping from the cut state. Also refuses `step` after an episode ended,
    because inner envs would otherwise continue silently (dm_env even resets itself)."""

    def __init__(self, env, duration):
        super().__init__(env)
        self._duration = int(duration or 0)
        self._step = None  # None until reset and after the episode ended

    def reset(self):
        self._step = 0
        return self.env.reset()

    def step(self, action):
        if self._step is None:
            raise RuntimeError(
                'step() called before reset() or after the episode ended; call reset()')
        obs = self.env.step(action)
        self._step += 1
        if self._duration and self._step >= self._duration:
            obs = {**obs, 'is_last': np.bool_(True)}
        if obs['is_last']:
            self._step = None
        return obs


class ActionRepeat(Wrapper):
    """Repeats each action `repeat` times, summing rewards and stopping at the episode end."""

    def __init__(self, env, repeat):
        super().__init__(env)
        self._repeat = int(repeat)

    def step(self, action):
        total = 0.0
        for _ in range(self._repeat):
            obs = self.env.step(action)
            total += float(obs['reward'])
            if obs['is_last']:
                break
        return {**obs, 'reward': np.float32(total)}
