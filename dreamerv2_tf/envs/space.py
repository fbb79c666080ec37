"""`Space`: the shape, dtype and bounds of one observation or action key.

Plain Python and NumPy (no TensorFlow, no gymnasium) so that spaces cross process boundaries and
are cheap to build. A discrete action space is a one-hot float32 vector with `discrete=True`.
"""

import numpy as np


class Space:

    def __init__(self, dtype, shape=(), low=None, high=None, discrete=False):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(x) for x in shape)
        if low is None:
            low = _dtype_min(self.dtype)
        if high is None:
            high = _dtype_max(self.dtype)
        self.low = np.broadcast_to(np.asarray(low, self.dtype), self.shape)
        self.high = np.broadcast_to(np.asarray(high, self.dtype), self.shape)
        self.discrete = bool(discrete)
        if self.discrete and len(self.shape) != 1:
            raise ValueError(f'a discrete (one-hot) space needs shape (n,), got {self.shape}')

    @property
    def n(self):
        """Number of choices of a discrete (one-hot) space."""
        if not self.discrete:
            raise AttributeError('only discrete spaces have n')
        return self.shape[0]

    def sample(self, rng=None):
        """A uniformly random value (one-hot for discrete spaces)."""
        rng = rng if rng is not None else np.random
        if self.discrete:
            value = np.zeros(self.shape, self.dtype)
            value[rng.randint(self.shape[0])] = 1
            return value
        if np.issubdtype(self.dtype, np.floating):
            low = np.maximum(self.low, -1e6)  # unbounded dims sample from a wide finite range
            high = np.minimum(self.high, 1e6)
            return rng.uniform(low, high, self.shape).astype(self.dtype)
        if self.dtype == bool:
            return rng.randint(0, 2, self.shape).astype(bool)
        return rng.randint(self.low, self.high.astype(np.int64) + 1, self.shape).astype(self.dtype)

    def contains(self, value):
        value = np.asarray(value)
        if value.shape != self.shape or value.dtype != self.dtype:
            return False
        if self.dtype == bool:
            return True
        return bool(np.all(value >= self.low) and np.all(value <= self.high))

    def __eq__(self, other):
        return (isinstance(other, Space) and self.dtype == other.dtype and self.shape == other.shape
                and self.discrete == other.discrete and np.array_equal(self.low, other.low)
                and np.array_equal(self.high, other.high))

    def __repr__(self):
        bounds = ''
        if self.dtype != bool and self.low.size:
            low, high = self.low.min(), self.high.max()
            bounds = f', low={low}, high={high}'
        kind = ', discrete' if self.discrete else ''
        return f'Space({self.dtype.name}, shape={self.shape}{bounds}{kind})'


def _dtype_min(dtype):
    if dtype == bool:
        return False
    if np.issubdtype(dtype, np.floating):
        return -np.inf
    return np.iinfo(dtype).min


def _dtype_max(dtype):
    if dtype == bool:
        return True
    if np.issubdtype(dtype, np.floating):
        return np.inf
    return np.iinfo(dtype).max
